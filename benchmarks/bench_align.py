"""Alignment training throughput: exoflow (dpo-pref / exo-pref, reference cache) vs trl DPOTrainer
vs the original scripts' way (every sequence padded to max_len, reference run every step).

    python benchmarks/bench_align.py [--size tiny|large] [--repeats N] [--steps S] [--batch B]

Every contender trains the same seeded GPT-NeoX (exoflow.modeling) on the same real HH
harmless-base pairs (the first S*B train pairs whose prompt+response fit max_len untruncated,
so that every contender sees exactly the same tokens), B prompts (2B sequences) per optimizer
step, no accumulation, fp32, AdamW (0.9, 0.95), clip 1.0, cosine, torch.set_num_threads(2).

Each contender lives in its own worker process (spawned once, so that its peak RSS is its own),
which first does an untimed 2-step warm-up run; then the workers run one at a time, in turn,
once per repeat (the order reversed every other repeat), each run a fresh trainer from the same
init over the same S steps. A run's time is from the first ``on_step_begin`` to the last
``on_optimizer_step`` callback: every step's forward, backward, clipping, optimizer and logging,
and the collation of batches 2..S (the first batch is fetched before the first step; the final
checkpoint save of exoflow and the trainers' set-up, including trl's precompute pass, are
outside). Response tokens (EOS included) are counted from the collated batches. Medians over
repeats; speed-ups are medians of the per-repeat ratios.

Contenders
* ``exoflow dpo-pref`` / ``exoflow exo-pref``: ``exoflow.align.train_align`` with the reference
  log-prob cache of ``exoflow.refcache.precompute_ref`` (its one-off cost is printed apart);
* ``exoflow dpo-pref, online ref``: the same with ``ref_cache=None`` (reference run every step),
  to separate the cache's share from the padding's;
* ``trl sigmoid/exo_pair online``: ``trl.DPOTrainer`` with its reference model run every step;
* ``trl sigmoid precomputed``: ``precompute_ref_log_probs=True`` (the precompute pass in the
  constructor is not timed, as exoflow's cache is not);
* ``original way``: the original scripts' batching emulated with exoflow's trainer: the collator
  pads every batch to ``max_len``, batches are uniformly random, the LM head runs over every
  position and the reference runs at every step (``ref_cache=None``).
* ablations (``--ablations``): ``exoflow dpo-pref`` with uniformly random batches instead of
  length-grouped ones, or with the LM head over every position instead of the response positions.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CONTENDERS = [
    "exoflow dpo-pref",
    "exoflow exo-pref",
    "trl sigmoid online",
    "trl exo_pair online",
    "trl sigmoid precomputed",
    "original way (pad max_len + online ref)",
    "exoflow dpo-pref, online ref",
]
# Ablations (--ablations): the pipeline with one of its speed-ups switched off.
ABLATIONS = [
    "exoflow dpo-pref, random batches",
    "exoflow dpo-pref, full LM head",
]
DEFAULTS = {"tiny": dict(steps=12, batch=8), "large": dict(steps=5, batch=4)}
LR = 1e-5


# ------------------------------------------------------------------------------ worker side


class _StepTimer:
    """TrainerCallback: perf_counter at every on_step_begin and on_optimizer_step."""

    def __new__(cls):
        from transformers import TrainerCallback

        class T(TrainerCallback):
            def __init__(self):
                self.begins, self.opt = [], []

            def on_step_begin(self, args, state, control, **kw):
                self.begins.append(time.perf_counter())

            def on_optimizer_step(self, args, state, control, **kw):
                self.opt.append(time.perf_counter())

        return T()


def _timed(r: dict) -> tuple[float, int, int]:
    """(seconds, response tokens, steps) of all the run's steps: from the first step's start to
    the last optimizer step (collating batches 2..n included; the first batch, fetched before
    the first step, and the final checkpoint save excluded)."""
    n = len(r["opt"])
    return r["opt"][-1] - r["begins"][0], sum(r["tokens"][:n]), n


def _run_exoflow(name: str, cfg: dict, tmp: Path, steps: int) -> dict:
    import torch

    import exoflow.align as A
    from exoflow.config import AlignParams, EngineParams, Runtime

    loss = "exo-pref" if "exo-pref" in name else "dpo-pref"
    pad_to = cfg["max_len"] if name.startswith("original") else None
    online = name.startswith("original") or "online ref" in name
    counts: list[int] = []
    seq_counts: list[int] = []

    class CountingCollator(A.AlignCollator):
        def __call__(self, features):
            out = super().__call__(features)
            if pad_to is not None:  # the original scripts: every sequence padded to max_len
                S, T = out["input_ids"].shape
                extra = pad_to - T
                if extra > 0:
                    out["input_ids"] = torch.cat(
                        [out["input_ids"], torch.full((S, extra), self.pad_id, dtype=torch.long)], 1)
                    for k in ("attention_mask", "loss_mask"):
                        out[k] = torch.cat([out[k], torch.zeros((S, extra), dtype=out[k].dtype)], 1)
            counts.append(int(out["loss_mask"].sum()))
            seq_counts.append(int(out["attention_mask"].sum()))
            return out

    orig = A.AlignCollator, A.sequence_logps
    A.AlignCollator = CountingCollator
    original = name.startswith("original")
    if original or "full LM head" in name:
        # the LM head over every position, then the response positions picked from the logits
        # (what the original scripts and trl do)
        A.sequence_logps = C.all_position_head_logps
    try:
        params = AlignParams(loss=loss, data="p2r", lr=LR, batch_size=cfg["batch"],
                               micro_batch_size=cfg["batch"], max_steps=steps,
                               save_every=steps, max_len=cfg["max_len"],
                               max_gen_len=cfg["max_gen_len"],
                               group_by_length=not (original or "random batches" in name))
        engine = Runtime(engine=EngineParams(num_threads=C.THREADS, logging_steps=10,
                                             checkpoint_every=10_000), dtype="fp32", seed=42)
        timer = _StepTimer()
        A.train_align(cfg["model"], cfg["data"], tmp / "out", tmp / "work", None, params, engine,
                      ref_cache=None if online else cfg["ref_cache"], callbacks=[timer])
    finally:
        A.AlignCollator, A.sequence_logps = orig
    return {"begins": timer.begins, "opt": timer.opt, "tokens": counts, "seq_tokens": seq_counts}


def _run_trl(name: str, cfg: dict, tmp: Path, steps: int) -> dict:
    import math

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    C.set_threads()
    loss = "exo_pair" if "exo_pair" in name else "sigmoid"
    tok = C.load_tok("right")
    ds = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                            for p in cfg["pairs"]])
    args = DPOConfig(
        output_dir=str(tmp / "trl"), per_device_train_batch_size=cfg["batch"],
        gradient_accumulation_steps=1, learning_rate=LR, max_steps=steps,
        lr_scheduler_type="cosine", warmup_steps=0, adam_beta1=0.9, adam_beta2=0.95,
        weight_decay=0.0, max_grad_norm=1.0, use_cpu=True, bf16=False, fp16=False,
        report_to="none", save_strategy="no", logging_steps=10, seed=42,
        dataloader_num_workers=0, disable_tqdm=True, beta=0.5, loss_type=[loss],
        label_smoothing=math.exp(-10) if loss == "exo_pair" else 0.0,
        max_length=cfg["max_len"], precompute_ref_log_probs="precomputed" in name,
        precompute_ref_batch_size=2 * cfg["batch"])
    model = AutoModelForCausalLM.from_pretrained(str(cfg["model"]), dtype=torch.float32)
    timer = _StepTimer()
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                         callbacks=[timer])
    counts: list[int] = []
    seq_counts: list[int] = []
    inner = trainer.data_collator

    def counting(features):
        out = inner(features)
        counts.append(int(out["completion_mask"].sum()))
        seq_counts.append(int(out["attention_mask"].sum()))
        return out

    trainer.data_collator = counting
    trainer.train()
    return {"begins": timer.begins, "opt": timer.opt, "tokens": counts, "seq_tokens": seq_counts}


def worker(name: str, cfg: dict, conn) -> None:
    sys.stdout = sys.stderr  # the trainers' logs; stdout holds only the tables
    C.set_threads()
    import torch  # noqa: F401  (imports before the baseline RSS)
    import transformers  # noqa: F401

    import exoflow.align  # noqa: F401
    if name.startswith("trl"):
        import trl  # noqa: F401
    base = C.rss_now_mib()
    conn.send({"ready": True, "rss_base": base})
    fn = _run_trl if name.startswith("trl") else _run_exoflow
    while True:
        msg = conn.recv()
        if msg == "stop":
            break
        tmp = Path(tempfile.mkdtemp(prefix="bench_align_"))
        try:
            if msg == "warmup":  # a short untimed run: first-call allocations, thread pools
                fn(name, cfg, tmp, 2)
                conn.send({"ok": True})
                continue
            r = fn(name, cfg, tmp, cfg["steps"])
            secs, toks, steps = _timed(r)
            conn.send({"secs": secs, "tokens": toks, "steps": steps,
                       "all_tokens": sum(r["tokens"][:cfg["steps"]]),
                       "seq_tokens": sum(r["seq_tokens"][:cfg["steps"]]),
                       "rss_peak": C.rss_peak_mib(), "rss_base": base})
        except Exception as e:  # noqa: BLE001
            import traceback

            conn.send({"error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}"})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------ main side


def prepare(size: str, steps: int, batch: int, max_len: int, max_gen_len: int) -> dict:
    from exoflow.config import EngineParams, Runtime
    from exoflow.io import write_records
    from exoflow.refcache import precompute_ref

    tok = C.load_tok()
    model = C.model_dir(size)
    need = steps * batch
    pairs, skipped = [], 0
    for p in C.hh_pairs("train"):
        n_p = len(tok(p["prompt"], add_special_tokens=False)["input_ids"])
        fits = True
        for y in (p["chosen"], p["rejected"]):
            ids = tok(y, add_special_tokens=False)["input_ids"]
            # untruncated in exoflow (response <= max_gen_len, whole prompt fits) and in trl;
            # trl tokenises prompt+response jointly: require the same tokens
            joint = tok(p["prompt"] + y, add_special_tokens=False)["input_ids"]
            if len(ids) > max_gen_len or n_p + len(ids) + 1 > max_len or len(joint) != n_p + len(ids):
                fits = False
        if fits:
            pairs.append(p)
        else:
            skipped += 1
        if len(pairs) == need:
            break
    if len(pairs) < need:
        raise SystemExit(f"only {len(pairs)} pairs fit max_len={max_len}; lower --steps/--batch")
    work = C.CACHE / f"align_{size}_{steps}x{batch}_l{max_len}_g{max_gen_len}"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "p2r.jsonl"
    write_records(data, ({"prompt": p["prompt"], "completions": [p["chosen"], p["rejected"]],
                          "rewards": [1.0, 0.0]} for p in pairs))
    cache = work / "ref_cache.jsonl"
    t0 = time.perf_counter()
    precompute_ref(model, data, cache, temp=0.8, max_len=max_len, max_gen_len=max_gen_len,
                   batch_size=2 * batch,
                   runtime=Runtime(engine=EngineParams(num_threads=C.THREADS)), progress=False)
    t_ref = time.perf_counter() - t0
    lens = [len(tok(p["prompt"] + y, add_special_tokens=False)["input_ids"]) + 1
            for p in pairs for y in (p["chosen"], p["rejected"])]
    resp = [len(tok(y, add_special_tokens=False)["input_ids"]) + 1
            for p in pairs for y in (p["chosen"], p["rejected"])]
    return {"model": str(model), "data": str(data), "ref_cache": str(cache), "pairs": pairs,
            "steps": steps, "batch": batch, "max_len": max_len, "max_gen_len": max_gen_len,
            "t_ref": t_ref, "skipped": skipped, "mean_len": sum(lens) / len(lens),
            "mean_resp": sum(resp) / len(resp)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(C.SIZES), default="tiny")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, help="optimizer steps per run (first is warm-up)")
    ap.add_argument("--batch", type=int, help="prompts per optimizer step (2 sequences each)")
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--max-gen-len", type=int, default=200)
    ap.add_argument("--only", nargs="*", help="substrings of contender names to run")
    ap.add_argument("--ablations", action="store_true",
                    help="also run exoflow with one of its speed-ups switched off")
    a = ap.parse_args(argv)
    steps = a.steps or DEFAULTS[a.size]["steps"]
    batch = a.batch or DEFAULTS[a.size]["batch"]
    C.set_threads()
    t_start = time.perf_counter()
    cfg = prepare(a.size, steps, batch, a.max_len, a.max_gen_len)
    names = [n for n in CONTENDERS + (ABLATIONS if a.ablations else [])
             if not a.only or any(s in n for s in a.only)]

    from transformers import AutoConfig

    mc = AutoConfig.from_pretrained(cfg["model"])
    print(f"# bench_align  size={a.size} (hidden {mc.hidden_size}, layers {mc.num_hidden_layers}, "
          f"heads {mc.num_attention_heads}, vocab {mc.vocab_size})  steps/run={steps} "
          f"(all timed, after an untimed 2-step warm-up run)  batch={batch} prompts x 2  max_len={a.max_len} "
          f"max_gen_len={a.max_gen_len}  repeats={a.repeats}")
    print(f"# data: {len(cfg['pairs'])} HH harmless-base train pairs (skipped {cfg['skipped']} "
          f"that would be truncated), mean sequence {cfg['mean_len']:.0f} tokens, mean response "
          f"{cfg['mean_resp']:.0f} tokens (EOS incl.)")
    print(f"# machine: {C.machine()}")
    print(f"# exoflow reference cache (one-off, all {len(cfg['pairs'])} prompts): "
          f"{cfg['t_ref']:.2f} s", flush=True)

    ctx = mp.get_context("spawn")
    workers, base = {}, {}
    for n in names:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker, args=(n, cfg, child), daemon=True)
        p.start()
        workers[n] = (p, parent)
        base[n] = parent.recv()["rss_base"]  # one start-up at a time
        parent.send("warmup")
        ok = parent.recv()
        if "error" in ok:
            print(f"!! {n} warm-up: {ok['error']}", file=sys.stderr, flush=True)
    results = {n: [] for n in names}
    for r in range(a.repeats):
        order = names if r % 2 == 0 else list(reversed(names))
        for n in order:
            conn = workers[n][1]
            conn.send("run")
            res = conn.recv()
            if "error" in res:
                print(f"!! {n}: {res['error']}", file=sys.stderr, flush=True)
                continue
            results[n].append(res)
            print(f"  repeat {r + 1} {n}: {res['steps'] / res['secs']:.3f} steps/s, "
                  f"{res['tokens'] / res['secs']:.0f} resp tok/s", file=sys.stderr, flush=True)
    for n in names:
        workers[n][1].send("stop")
        workers[n][0].join(30)

    def med(n, f):
        return C.median([f(x) for x in results[n]])

    rows = []
    for n in names:
        if not results[n]:
            rows.append([n, "failed", "", "", "", "", "", ""])
            continue
        sps = med(n, lambda x: x["steps"] / x["secs"])
        tps = med(n, lambda x: x["tokens"] / x["secs"])
        peak = max(x["rss_peak"] for x in results[n])
        rows.append([n, f"{sps:.3f}", f"{tps:.0f}", f"{med(n, lambda x: x['secs'] / x['steps']):.3f}",
                     f"{peak:.0f}", f"{peak - base[n]:.0f}", results[n][0]["all_tokens"],
                     results[n][0]["seq_tokens"]])
    print(C.fmt_table(["contender", "steps/s", "resp tok/s", "s/step", "peak RSS MiB",
                       "peak - base MiB", "resp tokens/run", "seq tokens/run"], rows))

    def ratio(a_, b_):
        if not (results.get(a_) and results.get(b_)):
            return None
        # median of per-repeat ratios (the contenders of one repeat ran back to back)
        rs = [x["steps"] / x["secs"] / (y["steps"] / y["secs"])
              for x, y in zip(results[a_], results[b_])]
        return C.median(rs)

    def ratio_best(a_, b_):
        if not (results.get(a_) and results.get(b_)):
            return None
        best = lambda n: max(x["steps"] / x["secs"] for x in results[n])  # noqa: E731
        return best(a_) / best(b_)

    print()
    ours = [n for n in names if n in ("exoflow dpo-pref", "exoflow exo-pref")]
    baselines = [n for n in names if n in CONTENDERS and n not in ours]
    targets = {"trl sigmoid online": 1.5, "trl exo_pair online": 1.5, "trl sigmoid precomputed": 1.0,
               "original way (pad max_len + online ref)": 2.0}
    rrows = []
    for o in ours:
        for n in baselines:
            v = ratio(o, n)
            if v is None:
                continue
            t = targets.get(n)
            rrows.append([f"{o} / {n}", f"{v:.2f}x", f"{ratio_best(o, n):.2f}x",
                          f">= {t}x" if t else "-", ("met" if v >= t else "MISSED") if t else ""])
    for p in [n for n in names if n in ABLATIONS]:
        v = ratio("exoflow dpo-pref", p)
        if v is not None:
            rrows.append([f"exoflow dpo-pref / {p}", f"{v:.2f}x",
                          f"{ratio_best('exoflow dpo-pref', p):.2f}x", "-", ""])
    print(C.fmt_table(["speed-up in steps/s", "median of per-repeat ratios", "best / best",
                       "target", ""],
                      rrows))
    print(f"# total wall time {time.perf_counter() - t_start:.0f} s; load average at the end "
          f"{C.load()} (other jobs on the machine share the 2 cores when it is above ~2)")
    return results


if __name__ == "__main__":
    main()
