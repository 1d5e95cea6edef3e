"""Hardware efficiency of alignment training: model FLOP/s as a fraction of the matmul FLOP/s
measured on the same machine in the same run, and where the rest of the time goes.

    python benchmarks/bench_mfu.py [--size large|tiny] [--steps S] [--batch B]

1. Peak: torch.matmul of two 2048x2048 fp32 matrices (and the training's own GEMM shapes),
   median of 10 after warm-up, torch.set_num_threads(2).
2. Training: exoflow's alignment step (``exoflow.align.sequence_logps`` + loss with cached reference
   log-probs, i.e. the policy forward + backward only, AdamW (0.9, 0.95), clip 1.0) on B real HH
   harmless-base prompts x 2 responses per step, batches collated by ``AlignCollator`` (padded to
   the batch's longest). Each phase is timed (collate, forward, log-probs + loss, backward,
   clip + optimizer); medians over the steps after the first (warm-up).
   Model FLOPs per step = 6 * (N - V*d) * tokens + 6 * V*d * head positions
   + 12 * L * d * sum_seq(len^2) (N: parameters without the input embedding, a lookup; V*d the
   LM head, applied at the response positions only in exoflow; the attention term counts the full T x T score and value
   products, forward + backward); MFU counts the real tokens, HFU the padded positions.
3. torch.profiler over 2 steps: self CPU time grouped into matmul (mm/addmm/bmm), attention
   (SDPA), vocabulary log-softmax (logsumexp / log_softmax over V), element-wise + norms,
   optimizer (_foreach / adam), copies/indexing, and the wall time outside any op (Python).
4. Comparison: the same step with the LM head over every position (the original scripts' and
   trl's way on the CPU) instead of only the response positions; timed the same way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def matmul_flops(n: int, reps: int = 10, m: int | None = None, k: int | None = None) -> float:
    import torch

    m = m or n
    k = k or n
    a = torch.randn(m, k)
    b = torch.randn(k, n)
    for _ in range(2):
        a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * m * n * k / statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(C.SIZES), default="large")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4, help="prompts per step (x 2 responses)")
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--max-gen-len", type=int, default=200)
    a = ap.parse_args(argv)
    C.set_threads()
    import torch
    from torch.profiler import ProfilerActivity, profile

    import exoflow.align as A
    import exoflow.align_data as D
    from exoflow.config import AlignParams
    from exoflow.logps import text_logps
    from exoflow.modeling import load_causal_lm

    t_start = time.perf_counter()
    tok = C.load_tok()
    model = load_causal_lm(str(C.model_dir(a.size)), dtype="fp32")
    cfg = model.config
    L, d, V = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    N = C.n_params(model, embeddings=False)
    n_pairs = a.steps * a.batch + 2 * a.batch
    pairs = [p for p in C.hh_pairs("train")][:n_pairs]
    records = [{"prompt": p["prompt"], "completions": [p["chosen"], p["rejected"]],
                "rewards": [1.0, 0.0]} for p in pairs]
    params = AlignParams(loss="exo-pref", data="p2r", lr=1e-5, batch_size=a.batch,
                           micro_batch_size=a.batch, max_steps=1, save_every=1,
                           max_len=a.max_len, max_gen_len=a.max_gen_len)
    ref = text_logps(model, tok, [r["prompt"] for r in records],
                     [r["completions"] for r in records], a.max_len, a.max_gen_len, 16,
                     temperature=params.temp)
    feats = D.encode_align(tok, records, a.max_len, a.max_gen_len, ref)
    collate = D.AlignCollator(tok.pad_token_id)
    batches_feats = [feats[i:i + a.batch] for i in range(0, len(feats), a.batch)]

    print(f"# bench_mfu  size={a.size}: GPT-NeoX hidden {d}, layers {L}, vocab {V}, "
          f"N={N / 1e6:.1f}M non-embedding params (LM head {V * d / 1e6:.1f}M)  batch={a.batch} "
          f"prompts x 2  max_len={a.max_len}  steps={a.steps} (first = warm-up)")
    print(f"# machine: {C.machine()}", flush=True)

    peak = max(matmul_flops(2048), matmul_flops(2048))
    shapes = {"2048^3 square": peak, "4096^3 square": matmul_flops(4096, reps=3)}

    def train(step_fn_logps, n_steps, label):
        all_head = step_fn_logps is C.all_position_head_logps
        import copy

        m = copy.deepcopy(model).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0)
        recs = []
        for i in range(n_steps):
            bf = batches_feats[i % len(batches_feats)]
            ph = {}
            t0 = time.perf_counter()
            batch = collate(bf)
            t1 = time.perf_counter()
            ph["collate"] = t1 - t0
            pol = step_fn_logps(m, batch, params.temp)
            t2 = time.perf_counter()
            ph["forward + response log-probs"] = t2 - t1
            Bk = batch["rewards"].shape
            from exoflow.losses import alignment_loss, group_candidates

            loss, _ = alignment_loss(params.loss, group_candidates(pol.view(Bk), 2),
                                     group_candidates(batch["ref_logps"], 2),
                                     group_candidates(batch["rewards"], 2), params.beta_pi,
                                     params.beta_r, params.pref_log_eps)
            t3 = time.perf_counter()
            ph["loss"] = t3 - t2
            loss.backward()
            t4 = time.perf_counter()
            ph["backward"] = t4 - t3
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            t5 = time.perf_counter()
            ph["clip + AdamW"] = t5 - t4
            am = batch["attention_mask"]
            lens = am.sum(1).tolist()
            S, T = am.shape
            real = sum(lens)
            resp = int(batch["loss_mask"].sum())
            # FLOPs the step needs: the LM head (V x d) only where it is applied
            head_real, head_pad = (real, S * T) if all_head else (resp, resp)
            fl_real = 6 * (N - V * d) * real + 6 * V * d * head_real + 12 * L * d * sum(x * x for x in lens)
            fl_pad = 6 * (N - V * d) * S * T + 6 * V * d * head_pad + 12 * L * d * S * T * T
            recs.append({"secs": t5 - t0, "phases": ph, "real": real, "padded": S * T,
                         "fl_real": fl_real, "fl_pad": fl_pad,
                         "resp": resp})
        return recs[1:], m, opt

    def summarize(label, recs):
        secs = statistics.median([r["secs"] for r in recs])
        mfu = statistics.median([r["fl_real"] / r["secs"] for r in recs])
        hfu = statistics.median([r["fl_pad"] / r["secs"] for r in recs])
        return secs, mfu, hfu

    base, m, opt = train(A.sequence_logps, a.steps, "exoflow")
    var, _, _ = train(C.all_position_head_logps, a.steps, "all-position head")
    s0, mfu0, hfu0 = summarize("exoflow", base)
    s1, mfu1, hfu1 = summarize("variant", var)
    print()
    print(C.fmt_table(["matmul fp32", "GFLOP/s"], [[k, f"{v / 1e9:.1f}"] for k, v in shapes.items()]))
    print()
    tok_real = statistics.median([r["real"] for r in base])
    tok_pad = statistics.median([r["padded"] for r in base])
    rows = [
        ["exoflow align step (LM head on response positions)", f"{s0:.3f}", f"{mfu0 / 1e9:.1f}",
         f"{100 * mfu0 / peak:.1f}%", f"{hfu0 / 1e9:.1f}", f"{100 * hfu0 / peak:.1f}%"],
        ["same step, LM head over every position", f"{s1:.3f}", f"{mfu1 / 1e9:.1f}",
         f"{100 * mfu1 / peak:.1f}%", f"{hfu1 / 1e9:.1f}", f"{100 * hfu1 / peak:.1f}%"],
    ]
    print(C.fmt_table(["training step", "s/step", "model GFLOP/s (real tokens)",
                       "MFU vs 2048^3 matmul", "GFLOP/s (padded)", "HFU"], rows))
    print(f"# per step: {tok_real:.0f} real tokens, {tok_pad:.0f} padded positions "
          f"({100 * (1 - tok_real / tok_pad):.0f}% padding), "
          f"{statistics.median([r['resp'] for r in base]):.0f} response tokens; "
          f"exoflow / all-position head: {s1 / s0:.2f}x faster")
    print()
    phases = list(base[0]["phases"])
    prow = []
    for ph in phases:
        v = statistics.median([r["phases"][ph] for r in base])
        prow.append([ph, f"{v:.3f}", f"{100 * v / s0:.0f}%"])
    print(C.fmt_table(["phase (exoflow step)", "s (median)", "share"], prow))

    # ---- profiler over 2 steps of the exoflow step
    groups = {
        "matmul (mm/addmm/bmm)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
        "attention (SDPA kernels)": ("scaled_dot_product", "flash_attention"),
        "vocab log-softmax / logsumexp": ("logsumexp", "log_softmax", "_softmax_backward",
                                          "log_softmax_backward"),
        "optimizer (AdamW, clip)": ("_foreach", "adam", "linalg_vector_norm", "clip_grad",
                                    "aten::norm"),
        "fill_ / zero_ (memsets, e.g. zeroed gradient buffers)": ("aten::fill_", "aten::zero_"),
        "element-wise + norms (gelu, layer_norm, add, mul, ...)": (
            "gelu", "layer_norm", "aten::add", "aten::mul", "aten::div", "aten::sub", "aten::exp",
            "aten::neg", "aten::cat", "aten::sum", "aten::where", "aten::masked", "aten::fill",
            "aten::zero", "aten::cos", "aten::sin", "aten::pow", "aten::rsqrt", "aten::embedding",
            "aten::threshold", "aten::tanh", "aten::sigmoid", "aten::log"),
        "copies / indexing / reshapes": ("copy", "index", "gather", "scatter", "clone", "contiguous",
                                         "_to_copy", "nonzero", "view", "reshape", "transpose",
                                         "permute", "expand", "slice", "select", "empty",
                                         "as_strided", "unsqueeze", "squeeze", "split", "stack",
                                         "detach", "item", "_local_scalar", "aten::t", "aten::zeros"),
    }

    def group_of(name: str) -> str:
        for g, keys in groups.items():
            if any(k in name for k in keys):
                return g
        return "other ops"

    def one_step(bf):
        batch = collate(bf)
        loss, _ = A.batch_loss(m, batch, params)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(2):
            one_step(batches_feats[i])
    wall = time.perf_counter() - t0
    tot = {}
    for e in prof.key_averages():
        g = group_of(e.key)
        tot[g] = tot.get(g, 0.0) + e.self_cpu_time_total / 1e6
    in_ops = sum(tot.values())
    print()
    prow = [[g, f"{v:.2f}", f"{100 * v / wall:.0f}%"] for g, v in sorted(tot.items(), key=lambda x: -x[1])]
    prow.append(["outside ops (Python, dispatch, profiler)", f"{max(wall - in_ops, 0):.2f}",
                 f"{100 * max(wall - in_ops, 0) / wall:.0f}%"])
    print(C.fmt_table(["profiler group (2 steps, self CPU time)", "s", "share of wall"], prow))
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
    print()
    print(C.fmt_table(["top ops by self CPU time", "s", "calls"],
                      [[e.key, f"{e.self_cpu_time_total / 1e6:.2f}", e.count] for e in top]))
    print(f"# total wall time {time.perf_counter() - t_start:.0f} s; load average at the end "
          f"{C.load()} (other jobs on the machine share the 2 cores when it is above ~2)")


if __name__ == "__main__":
    main()
