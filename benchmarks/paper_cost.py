"""Cost of the paper-scale run (config.yaml) on paper: FLOPs per stage -> GPU-hours, and what
the reference-log-prob cache and the padding choices save there. Pure arithmetic, except that
the token lengths are measured on the local HH sample with the benchmark tokenizer.

    python benchmarks/paper_cost.py [--tflops 312] [--mfu 0.40] [--hbm-tbs 2.0] [--bw-eff 0.7]

Assumptions (printed with the result):
* model: Pythia-2.8B (GPT-NeoX: 32 layers, d=2560, FFN 10240, vocab 50304, untied head);
  N = non-embedding parameters + LM head (the input embedding is a lookup, no FLOPs);
* data: Anthropic HH helpful-base, 43,835 train / 2,354 test pairs (the hub's counts; not
  available offline, so the lengths are measured on the local harmless-base sample, 2,000
  train pairs, with the byte-level BPE trained on it, vocab 4,096 — coarser than Pythia's
  50k vocabulary, so token counts are over-estimated, by ~chars/token ratio printed below);
* config.yaml: max_len 512 / max_gen_len 200 everywhere; SFT 1 epoch (micro 8), RM 1 epoch
  (micro 8 pairs), SFT samples 2 per prompt for train and test prompts (batch 32 prompts,
  max_new_tokens 200), 4 alignment runs x 175 steps x 128 prompts x 2 (micro 8 prompts),
  eval: 4 runs x 10 checkpoints + the SFT model, 512 test prompts x 4 samples (batch 32
  prompts), RM score + KL (policy and SFT log-probs of each sample); gradient checkpointing on
  (training = 8N FLOPs/token: forward, recomputed forward, backward);
* FLOPs: training 8N/token + 16 L d T/token (attention, with recompute); forward 2N + 4 L d T;
  the GPU: A100 bf16 dense peak --tflops (312) at an assumed MFU --mfu (40%) for every
  training / forward pass; decoding is bandwidth bound: one decode step of R rows reads the
  weights (2 bytes x all params) and the KV cache (R x context x 2 x L x d x 2 bytes) at
  --bw-eff x --hbm-tbs TB/s, or is FLOP bound, whichever is slower; a generate call runs until
  its longest row stops (max_new_tokens = 200 steps assumed, the mean useful response length
  is the measured one);
* padding: training batches are length-grouped and padded to their longest sequence (exoflow's
  group_by_length, on in the presets; config.yaml draws random batches as the original does,
  shown for comparison) vs padded to max_len (the original scripts); the expected longest of a micro-batch is
  estimated by sampling micro-batches from the measured length distribution (seeded);
  inference (reference cache, scoring, prefill) is length-sorted in exoflow.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

L, D, FFN, V = 32, 2560, 10240, 50304
PER_LAYER = 4 * D * D + 4 * D + 2 * D * FFN + FFN + D + 4 * D  # qkv+dense, mlp, 2 layernorms
N_BODY = L * PER_LAYER + 2 * D
N_HEAD = V * D
N = N_BODY + N_HEAD             # FLOP-bearing parameters
N_ALL = N + V * D               # + input embedding
TRAIN_PAIRS, TEST_PAIRS = 43_835, 2_354
# Host time to launch one GPT-NeoX layer of a decode step (eager PyTorch), measured on this
# machine's CPU with benchmarks/bench_decode_step.py (see benchmarks/RESULTS.md); a GPU host
# launches the same kernels, so it bounds a decode step from below there too.
LAYER_OVERHEAD_MS = 0.27
MAX_LEN, MAX_GEN = 512, 200


def measured_lengths():
    tok = C.load_tok()
    pl, cl, rl, chars, toks = [], [], [], 0, 0
    for p in C.hh_pairs("train"):
        ip = tok(p["prompt"], add_special_tokens=False)["input_ids"]
        for y, out in ((p["chosen"], cl), (p["rejected"], rl)):
            iy = tok(y, add_special_tokens=False)["input_ids"]
            out.append(len(iy))
        pl.append(len(ip))
        chars += len(p["prompt"]) + len(p["chosen"])
        toks += len(ip) + cl[-1]
    return pl, cl, rl, chars / toks


def trunc(p, r, eos=True):
    r = min(r, MAX_GEN) + (1 if eos else 0)
    return min(p, MAX_LEN - r), r


def expected_max(lengths, b, trials=4000, seed=0):
    rng = random.Random(seed)
    return statistics.fmean(max(rng.choices(lengths, k=b)) for _ in range(trials))


def sorted_padded(lengths, b):
    s = sorted(lengths, reverse=True)
    return sum(max(s[i:i + b]) * len(s[i:i + b]) for i in range(0, len(s), b)) / len(s)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tflops", type=float, default=312.0)
    ap.add_argument("--mfu", type=float, default=0.40)
    ap.add_argument("--hbm-tbs", type=float, default=2.0)
    ap.add_argument("--bw-eff", type=float, default=0.7)
    ap.add_argument("--layer-overhead-ms", type=float, default=LAYER_OVERHEAD_MS,
                    help="host time to launch one GPT-NeoX layer of one decode step (measured "
                         "on this CPU: benchmarks/bench_decode_step.py)")
    a = ap.parse_args(argv)
    eff = a.tflops * 1e12 * a.mfu
    bw = a.hbm_tbs * 1e12 * a.bw_eff

    pl, cl, rl, cpt = measured_lengths()
    seq_c = [sum(trunc(p, c)) for p, c in zip(pl, cl)]            # prompt+chosen+EOS
    seq_pair = [sum(trunc(p, y)) for p, c, r in zip(pl, cl, rl) for y in (c, r)]
    seq_rm = [sum(trunc(p, y, eos=False)) for p, c, r in zip(pl, cl, rl) for y in (c, r)]
    prompt_gen = [min(p, MAX_LEN) for p in pl]
    mean = statistics.fmean
    resp_mean = mean([min(y, MAX_GEN) + 1 for y in cl + rl])

    def train_fl(tokens, T):   # tokens processed (incl. padding) at width T
        return tokens * (8 * N + 16 * L * D * T)

    def fwd_fl(tokens, T):
        return tokens * (2 * N + 4 * L * D * T)

    def hours(fl):
        return fl / eff / 3600

    overhead = a.layer_overhead_ms * 1e-3 * (L + 2)  # + embedding and head

    def gen_hours(n_prompts, n_ret, batch_prompts, steps=MAX_GEN, how="exoflow"):
        """GPU-hours of sampling n_ret completions of n_prompts prompts, batch_prompts per
        generate call that decodes ``steps`` steps (until its longest row ends). A step costs
        the slowest of: its FLOPs, reading the weights and the KV cache, and launching it from
        the host (``overhead``: measured per layer); with ``how="generate"`` (transformers'
        default DynamicCache, each prompt run once per row) the cache is also copied every step
        (torch.cat: read + write) and the prefill covers every row, with ``"exoflow"`` (one
        prefill per prompt, a static cache written in place) neither."""
        rows = batch_prompts * n_ret
        calls = -(-n_prompts // batch_prompts)
        pre_T = sorted_padded(prompt_gen, batch_prompts)
        pre_rows = n_prompts * (1 if how == "exoflow" else n_ret)
        prefill = fwd_fl(pre_rows * pre_T, pre_T) / eff
        decode = 0.0
        for s in range(steps):
            ctx = pre_T + s
            kv = rows * ctx * 2 * L * D * 2  # bytes of keys and values, bf16
            t_fl = rows * (2 * N + 4 * L * D * ctx) / eff
            t_bw = (2 * N_ALL + kv) / bw
            copy = 2 * kv / bw if how == "generate" else 0.0
            decode += max(t_fl, t_bw, overhead) + copy
        return (prefill + calls * decode) / 3600

    stages = []
    # SFT: 1 epoch of chosen responses, micro 8; RM: pairs, micro 8 (16 sequences). exoflow's
    # batches are length-grouped (about as wide as length-sorted ones); random batches padded to
    # their longest are printed for comparison
    T_sft_rand, T_rm_rand = expected_max(seq_c, 8), expected_max(seq_rm, 16)
    T_sft = sorted_padded(seq_c, 8)
    stages.append(("train_sft", hours(train_fl(TRAIN_PAIRS * T_sft, T_sft)),
                   hours(train_fl(TRAIN_PAIRS * MAX_LEN, MAX_LEN))))
    T_rm = sorted_padded([max(a, b) for a, b in zip(seq_rm[::2], seq_rm[1::2]) for _ in (0, 1)], 16)
    stages.append(("train_rm", hours(train_fl(2 * TRAIN_PAIRS * T_rm, T_rm)),
                   hours(train_fl(2 * TRAIN_PAIRS * MAX_LEN, MAX_LEN))))
    sft_rm_random = hours(train_fl(TRAIN_PAIRS * T_sft_rand, T_sft_rand)) + \
        hours(train_fl(2 * TRAIN_PAIRS * T_rm_rand, T_rm_rand))
    g_sft = gen_hours(TRAIN_PAIRS + TEST_PAIRS, 2, 32)
    g_sft_hf = gen_hours(TRAIN_PAIRS + TEST_PAIRS, 2, 32, how="generate")
    stages.append(("sample_sft (train+test, 2/prompt)", g_sft, None))
    T_score = sorted_padded(seq_rm, 32)
    n_label = 2 * (TRAIN_PAIRS + TEST_PAIRS)
    stages.append(("label_rewards", hours(fwd_fl(n_label * T_score, T_score)), None))
    T_ref = sorted_padded(seq_pair, 32)
    ref_all = hours(fwd_fl(2 * 2 * TRAIN_PAIRS * T_ref, T_ref))  # p2r + rm_labels, K=2
    stages.append(("precompute_ref (2 data sets, all records)", ref_all, None))
    steps, prompts = 175, 128
    T_al = expected_max(seq_pair, 16)  # random micro-batches of 8 prompts x 2
    al_tokens = 4 * steps * prompts * 2 * T_al
    al_random = hours(train_fl(al_tokens, T_al))
    al_ref_online = hours(fwd_fl(al_tokens, T_al))
    # exoflow: length-grouped batches (megabatches of 50 batches sorted by length, so a
    # micro-batch is about as wide as a length-sorted one) and the LM head (8 V d per token with
    # recompute) only at the response positions
    T_grp = sorted_padded(seq_pair, 16)
    n_seq = 4 * steps * prompts * 2
    al_pol = hours(train_fl(n_seq * T_grp, T_grp) - 8 * N_HEAD * n_seq * (T_grp - resp_mean))
    al_pad = hours(train_fl(4 * steps * prompts * 2 * MAX_LEN, MAX_LEN)) + \
        hours(fwd_fl(4 * steps * prompts * 2 * MAX_LEN, MAX_LEN))
    stages.append(("train_align (4 runs, cached ref)", al_pol, al_pad))
    n_ck = 4 * 10 + 1
    g_eval = n_ck * gen_hours(512, 4, 32)
    g_eval_hf = n_ck * gen_hours(512, 4, 32, how="generate")
    stages.append(("sample_checkpoint (41 ckpts x 512 x 4)", g_eval, None))
    T_ev = sorted_padded(seq_rm, 32)
    ev = n_ck * (hours(fwd_fl(2048 * T_ev, T_ev)) * 3)  # RM score + policy + SFT log-probs
    stages.append(("eval_checkpoint (RM + KL, 41 ckpts)", ev, None))
    total = sum(s[1] for s in stages)

    print("# paper_cost: config.yaml (Pythia-2.8B, HH helpful-base) on paper")
    print(f"# N = {N / 1e9:.3f}B FLOP-bearing params ({N_ALL / 1e9:.3f}B total); GPU: {a.tflops:.0f} "
          f"TFLOP/s bf16 peak x MFU {a.mfu:.0%} = {eff / 1e12:.0f} TFLOP/s effective; decoding at "
          f"{a.hbm_tbs} TB/s x {a.bw_eff:.0%}; a decode step takes at least {1e3 * overhead:.1f} ms "
          f"to launch ({a.layer_overhead_ms} ms per layer, {L} layers + embedding + head)")
    print(f"# lengths measured on the local HH harmless-base sample (2,000 train pairs, BPE vocab "
          f"4096, {cpt:.2f} chars/token; Pythia's tokenizer gives ~4 on English, so token counts "
          f"here are ~{4 / cpt:.1f}x high): prompt {mean(pl):.0f}, chosen {mean(cl):.0f}, rejected "
          f"{mean(rl):.0f} tokens (means, untruncated); truncated sequence (prompt+response+EOS) "
          f"{mean(seq_pair):.0f}; mean response {resp_mean:.0f}")
    print(f"# padded width: random micro-batches: SFT 8 {T_sft_rand:.0f}, RM 16 {T_rm_rand:.0f}, align 16 "
          f"sequences {T_al:.0f} (expected longest, vs {MAX_LEN}); length-grouped/sorted: SFT "
          f"{T_sft:.0f}, RM {T_rm:.0f} (each pair padded to its longer), align {T_grp:.0f}, "
          f"inference {T_ref:.0f} (real mean {mean(seq_pair):.0f})")
    print()
    rows = [[n, f"{h:.1f}", f"{100 * h / total:.0f}%",
             f"{p:.1f}" if p is not None else "", f"{p / h:.2f}x" if p else ""] for n, h, p in stages]
    rows.append(["total", f"{total:.1f}", "100%", "", ""])
    print(C.fmt_table(["stage", "GPU-h (exoflow)", "share", "GPU-h padded to max_len (+ online ref for align)",
                       "ratio"], rows))
    print()
    used = 2 * steps * prompts * 2  # records the runs actually visit: 2 data sets x 22,400 prompts x K
    ref_used = hours(fwd_fl(used * T_ref, T_ref))
    print(C.fmt_table(["reference log-probs at paper scale", "GPU-h"], [
        ["online: reference forward in every step of the 4 runs", f"{al_ref_online:.1f}"],
        ["cache over every record of both data sets (ref_records: all)", f"{ref_all:.1f}"],
        ["cache over the records the runs visit (ref_records: visited, config.yaml)", f"{ref_used:.1f}"],
    ]))
    print(f"# the runs visit {steps * prompts:,} of {TRAIN_PAIRS:,} prompts per data set; the cache "
          f"also drops the second 2.8B model (5.6 GB bf16 per GPU) from every alignment job")
    print(C.fmt_table(["sampling at paper scale", "GPU-h (exoflow)", "GPU-h (generate, default cache)",
                       "ratio"], [
        ["sample_sft (train+test, 2/prompt, 32 prompts/call)", f"{g_sft:.2f}", f"{g_sft_hf:.2f}",
         f"{g_sft_hf / g_sft:.2f}x"],
        ["sample_checkpoint (41 ckpts x 512 x 4)", f"{g_eval:.2f}", f"{g_eval_hf:.2f}",
         f"{g_eval_hf / g_eval:.2f}x"]]))
    rows_step = 32 * 4
    t_launch = overhead
    t_w = 2 * N_ALL / bw
    print(f"# a decode step of {rows_step} rows: launching it {1e3 * t_launch:.1f} ms, reading the "
          f"weights {1e3 * t_w:.1f} ms: decoding in eager PyTorch is launch bound at these batch "
          f"sizes, so every row that has ended but keeps decoding until its batch's longest row "
          f"ends costs the same as a useful one ({MAX_GEN} steps per call; the mean useful "
          f"response is ~{resp_mean:.0f} tokens)")
    print("# vLLM (not measured here; published figures only): its announcement (June 2023) reports up to "
          "24x the throughput of transformers' generate and 3.5x TGI's (LLaMA-7B/13B, ShareGPT), the "
          "paper (Kwon et al., SOSP 2023) 2-4x FasterTransformer's and Orca's at equal latency. Here "
          "it would remove the launch floor (CUDA graphs) and the rows that decode after they end "
          "(continuous batching), the two costs this model says dominate sampling.")
    print(f"# train_sft + train_rm: {stages[0][1] + stages[1][1]:.2f} GPU-h with length-grouped batches; "
          f"{sft_rm_random:.2f} GPU-h with random batches")
    print(f"# train_align: {al_pol:.2f} GPU-h with length-grouped batches (width ~{T_grp:.0f}) and the LM "
          f"head on response positions; {al_random:.2f} GPU-h with random batches (width ~{T_al:.0f}) "
          f"and the head everywhere; {al_pad:.2f} GPU-h padded to {MAX_LEN} with the reference online")


if __name__ == "__main__":
    main()
