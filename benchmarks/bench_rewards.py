"""Reward scoring throughput: exoflow.rewards.score_texts vs a transformers text-classification
pipeline over prompt+response strings (batched, unsorted: the original's way).

    python benchmarks/bench_rewards.py [--size tiny|large] [--repeats N] [--pairs P] [--batch B]

Same GPTNeoXForSequenceClassification (exoflow.modeling.load_reward_model on the seeded
GPT-NeoX of --size, scalar head seeded), same real HH harmless-base test pairs (chosen and
rejected, 2P sequences, those that fit --max-len untruncated), same batch size, fp32,
torch.set_num_threads(2), one process; contenders alternate per repeat (order flipped every
repeat) after one untimed warm-up call each. Medians over repeats; the ratio is the median of
per-repeat wall-time ratios. The scores of the two sides are compared as a correctness check.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

DEFAULTS = {"tiny": dict(pairs=256, batch=32), "large": dict(pairs=64, batch=16)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(C.SIZES), default="tiny")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pairs", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--max-gen-len", type=int, default=200)
    a = ap.parse_args(argv)
    P = a.pairs or DEFAULTS[a.size]["pairs"]
    B = a.batch or DEFAULTS[a.size]["batch"]
    C.set_threads()
    import torch
    from transformers import pipeline

    from exoflow.modeling import load_reward_model
    from exoflow.rewards import score_texts

    t_start = time.perf_counter()
    tok = C.load_tok("right")
    prompts, responses, lens = [], [], []
    for p in C.hh_pairs("test"):
        n_p = len(tok(p["prompt"], add_special_tokens=False)["input_ids"])
        ys = [p["chosen"], p["rejected"]]
        ny = [len(tok(y, add_special_tokens=False)["input_ids"]) for y in ys]
        joint = [len(tok(p["prompt"] + y, add_special_tokens=False)["input_ids"]) for y in ys]
        if max(ny) <= a.max_gen_len and n_p + max(ny) <= a.max_len and joint == [n_p + k for k in ny]:
            for y, k in zip(ys, ny):
                prompts.append(p["prompt"])
                responses.append(y)
                lens.append(n_p + k)
        if len(prompts) == 2 * P:
            break
    torch.manual_seed(0)
    model = load_reward_model(str(C.model_dir(a.size)), dtype="fp32",
                              pad_token_id=tok.pad_token_id).eval()
    pipe = pipeline("text-classification", model=model, tokenizer=tok, device="cpu")
    texts = [p + y for p, y in zip(prompts, responses)]

    def ours(idx):
        return score_texts(model, tok, [prompts[i] for i in idx], [responses[i] for i in idx],
                           batch_size=B, max_len=a.max_len, max_gen_len=a.max_gen_len,
                           progress=False)

    def theirs(idx):
        out = pipe([texts[i] for i in idx], batch_size=B, function_to_apply="none",
                   truncation=True, max_length=a.max_len)
        return [o["score"] for o in out]

    contenders = {"exoflow score_texts": ours, "pipeline text-classification (unsorted)": theirs}
    allidx = list(range(len(texts)))
    print(f"# bench_rewards  size={a.size} params={C.n_params(model) / 1e6:.1f}M  "
          f"sequences={len(texts)} (HH harmless-base test chosen+rejected, mean "
          f"{sum(lens) / len(lens):.0f} / max {max(lens)} tokens)  batch={B}  repeats={a.repeats}")
    print(f"# machine: {C.machine()}", flush=True)
    for fn in contenders.values():
        fn(allidx[:B])
    res = {c: [] for c in contenders}
    scores = {}
    for r in range(a.repeats):
        names = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for c in names:
            t0 = time.perf_counter()
            scores[c] = contenders[c](allidx)
            dt = time.perf_counter() - t0
            res[c].append(dt)
            print(f"  repeat {r + 1} {c}: {dt:.2f} s", file=sys.stderr, flush=True)
    a_, b_ = list(contenders)
    diff = max(abs(x - y) for x, y in zip(scores[a_], scores[b_]))
    rows = [[c, f"{C.median(res[c]):.2f}", f"{len(texts) / C.median(res[c]):.1f}"] for c in contenders]
    print(C.fmt_table(["contender", "s (median)", "sequences/s"], rows))
    v = C.median([y / x for x, y in zip(res[a_], res[b_])])
    print()
    print(C.fmt_table(["speed-up", "ratio", "target", ""],
                      [[f"{a_} / {b_}", f"{v:.2f}x", ">= 2x", "met" if v >= 2 else "MISSED"]]))
    print(f"# max |score difference| between the two sides: {diff:.2e}")
    # What padding alone allows: forward FLOPs of the padded batches on each side (2N per
    # position + attention 4*L*d*T^2 per row), exoflow's length-sorted vs the pipeline's
    # batches in input order; on a compute-bound CPU the speed-up cannot exceed their ratio.
    from exoflow.batching import length_sorted_batches

    cfg = model.config
    n_par, att = C.n_params(model, embeddings=False), 4 * cfg.num_hidden_layers * cfg.hidden_size

    def flops(batches):
        return sum(len(b) * (2 * n_par * max(lens[i] for i in b) + att * max(lens[i] for i in b) ** 2)
                   for b in batches)

    ours_b = length_sorted_batches(lens, B)
    theirs_b = [allidx[i:i + B] for i in range(0, len(allidx), B)]
    pad = lambda bs: sum(len(b) * max(lens[i] for i in b) for b in bs)  # noqa: E731
    print(f"# padded positions: exoflow {pad(ours_b)}, pipeline {pad(theirs_b)} (real {sum(lens)}); "
          f"forward FLOP ratio pipeline / exoflow = {flops(theirs_b) / flops(ours_b):.2f}x "
          "(the bound on the speed-up from padding)")
    print(f"# total wall time {time.perf_counter() - t_start:.0f} s; load average at the end "
          f"{C.load()} (other jobs on the machine share the 2 cores when it is above ~2)")


if __name__ == "__main__":
    main()
