"""Sampling throughput: exoflow.sampling.sample_completions vs a transformers text-generation
pipeline over the prompts (batched, unsorted: the original's way).

    python benchmarks/bench_sampling.py [--size tiny|large] [--repeats N] [--prompts P]
        [--max-new-tokens M] [--batch B]

Same seeded GPT-NeoX (exoflow.modeling, random init), same real HH harmless-base test prompts
(file order, those of at most --max-len tokens so that neither side truncates), same
batch size in prompts (B prompts x n completions per generate call), same max_new_tokens,
temperature 0.8, no top-k, fp32, torch.set_num_threads(2), one process. For n = 2 and 4
completions per prompt the two contenders alternate within each repeat (order flipped every
repeat); one untimed warm-up call each first. New tokens are counted by wrapping
``model.generate`` (per row: generated tokens before the first EOS/pad), for both sides alike;
the headline ratio is the median of the per-repeat wall-time ratios for the same prompt set.

exoflow runs each prompt once and copies its KV cache to its n rows of a preallocated static
cache (``share_prompt_cache``, ``static_cache``); ``--ablations`` adds exoflow without the shared
prompt (and so with generate's own growing cache) and with the shared prompt but a growing cache,
to measure each one's share.

Note: a random-init model rarely emits EOS, so nearly every row runs to max_new_tokens on both
sides; the length-sorting gain is then the padding of the prompts (left padding to the batch's
longest prompt), not early stopping.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

DEFAULTS = {"tiny": dict(prompts=64, batch=16), "large": dict(prompts=16, batch=8)}


def counting_generate(model, counter: dict, eos_id: int, pad_id: int):
    orig = model.generate

    def generate(*args, **kwargs):
        out = orig(*args, **kwargs)
        seqs = out.sequences if hasattr(out, "sequences") else out
        ids = kwargs.get("input_ids")
        if ids is None:
            ids = args[0] if args else kwargs.get("inputs")
        width = ids.shape[1]
        gen = seqs[:, width:]
        stop = (gen == eos_id) | (gen == pad_id)
        # tokens before the first EOS/pad of each row
        first = (stop.cumsum(1) == 0).sum(1)
        counter["tokens"] += int(first.sum())
        counter["rows"] += gen.shape[0]
        counter["positions"] += gen.shape[0] * gen.shape[1]
        counter["prompt_positions"] += gen.shape[0] * width  # rows x padded prompt width
        return out

    model.generate = generate


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(C.SIZES), default="tiny")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--batch", type=int, help="prompts per generate call")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--returns", type=int, nargs="*", default=[2, 4])
    ap.add_argument("--ablations", action="store_true",
                    help="also run exoflow without its shared prompt cache")
    a = ap.parse_args(argv)
    P = a.prompts or DEFAULTS[a.size]["prompts"]
    B = a.batch or DEFAULTS[a.size]["batch"]
    C.set_threads()
    import torch
    from transformers import pipeline

    from exoflow.modeling import load_causal_lm
    from exoflow.sampling import sample_completions

    t_start = time.perf_counter()
    tok = C.load_tok("left")
    prompts, lens = [], []
    for p in C.hh_pairs("test"):
        n = len(tok(p["prompt"], add_special_tokens=False)["input_ids"])
        if n <= a.max_len:
            prompts.append(p["prompt"])
            lens.append(n)
        if len(prompts) == P:
            break
    model = load_causal_lm(str(C.model_dir(a.size)), dtype="fp32").eval()
    counter = {"tokens": 0, "rows": 0, "positions": 0, "prompt_positions": 0}
    counting_generate(model, counter, tok.eos_token_id, tok.pad_token_id)
    pipe = pipeline("text-generation", model=model, tokenizer=tok, device="cpu")

    def ours(ps, n):
        return sample_completions(model, tok, ps, num_return=n, temperature=0.8, top_k=0,
                                  max_new_tokens=a.max_new_tokens, max_len=a.max_len,
                                  batch_size=B, seed=42, progress=False)

    def ours_unshared(ps, n):
        return sample_completions(model, tok, ps, num_return=n, temperature=0.8, top_k=0,
                                  max_new_tokens=a.max_new_tokens, max_len=a.max_len,
                                  batch_size=B, seed=42, progress=False, share_prompt_cache=False)

    def theirs(ps, n):
        return pipe(ps, batch_size=B, max_new_tokens=a.max_new_tokens, do_sample=True,
                    temperature=0.8, top_k=0, top_p=1.0, num_return_sequences=n,
                    return_full_text=False, pad_token_id=tok.pad_token_id)

    def ours_dynamic(ps, n):
        return sample_completions(model, tok, ps, num_return=n, temperature=0.8, top_k=0,
                                  max_new_tokens=a.max_new_tokens, max_len=a.max_len,
                                  batch_size=B, seed=42, progress=False, static_cache=False)

    contenders = {"exoflow sample_completions": ours, "pipeline text-generation (unsorted)": theirs}
    if a.ablations:
        contenders["exoflow, prompt cache not shared"] = ours_unshared
        contenders["exoflow, growing (dynamic) cache"] = ours_dynamic
    print(f"# bench_sampling  size={a.size} params={C.n_params(model) / 1e6:.1f}M  prompts={P} "
          f"(HH harmless-base test, mean {sum(lens) / len(lens):.0f} / max {max(lens)} tokens)  "
          f"batch={B} prompts  max_new_tokens={a.max_new_tokens}  temperature=0.8  "
          f"repeats={a.repeats}")
    print(f"# machine: {C.machine()}", flush=True)
    torch.manual_seed(0)
    for fn in contenders.values():  # warm-up
        fn(prompts[:B], 2)
    res = {(c, n): [] for c in contenders for n in a.returns}
    for r in range(a.repeats):
        for n in a.returns:
            names = list(contenders) if r % 2 == 0 else list(reversed(contenders))
            for c in names:
                for k in counter:
                    counter[k] = 0
                t0 = time.perf_counter()
                contenders[c](prompts, n)
                dt = time.perf_counter() - t0
                res[(c, n)].append({"secs": dt, **counter})
                print(f"  repeat {r + 1} n={n} {c}: {dt:.2f} s, {counter['tokens'] / dt:.0f} new tok/s",
                      file=sys.stderr, flush=True)
    rows = []
    for n in a.returns:
        for c in contenders:
            xs = res[(c, n)]
            rows.append([c, n, f"{C.median([x['secs'] for x in xs]):.2f}",
                         f"{C.median([x['tokens'] / x['secs'] for x in xs]):.0f}",
                         f"{C.median([x['positions'] / x['secs'] for x in xs]):.0f}",
                         xs[0]["prompt_positions"], xs[0]["tokens"]])
    print(C.fmt_table(["contender", "n", "s (median)", "new tok/s", "generated positions/s",
                       "padded prompt positions (rows x width)", "new tokens"], rows))
    print()
    rr = []
    for n in a.returns:
        o, t = res[("exoflow sample_completions", n)], res[("pipeline text-generation (unsorted)", n)]
        v = C.median([y["secs"] / x["secs"] for x, y in zip(o, t)])
        vt = C.median([(x["tokens"] / x["secs"]) / (y["tokens"] / y["secs"]) for x, y in zip(o, t)])
        rr.append([f"n={n}", f"{v:.2f}x", f"{vt:.2f}x", ">= 2x", "met" if vt >= 2 else "MISSED"])
        if a.ablations:
            u = res[("exoflow, prompt cache not shared", n)]
            vu = C.median([y["secs"] / x["secs"] for x, y in zip(o, u)])
            rr.append([f"n={n}: shared / not shared prompt cache", f"{vu:.2f}x", "", "-", ""])
            d = res[("exoflow, growing (dynamic) cache", n)]
            vd = C.median([y["secs"] / x["secs"] for x, y in zip(o, d)])
            rr.append([f"n={n}: static / growing cache", f"{vd:.2f}x", "", "-", ""])
    print(C.fmt_table(["completions/prompt", "wall-time ratio", "new tok/s ratio", "target", ""], rr))
    print(f"# total wall time {time.perf_counter() - t_start:.0f} s; load average at the end "
          f"{C.load()} (other jobs on the machine share the 2 cores when it is above ~2)")


if __name__ == "__main__":
    main()
