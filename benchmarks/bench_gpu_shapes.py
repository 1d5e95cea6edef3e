"""One alignment step and one sampling batch at a model shape (random weights), timed.

    python benchmarks/bench_gpu_shapes.py --shape pythia-2.8b       # on a GPU (scripts/gpu_check.sh)
    python benchmarks/bench_gpu_shapes.py --shape tiny --device cpu # the same code on this CPU

The alignment step is exoflow's: EXO (rw, N = 2) on a micro-batch of ``--prompts`` prompts x 2
candidates of ``--len`` tokens (prompt ``--len`` - ``--gen`` + response ``--gen``), policy log-probs
against cached reference log-probs (the workflow's precompute_ref), fp32 master weights under
bf16 autocast (the Trainer's amp), gradient checkpointing, AdamW step: the paper's micro-batch
(16 prompts per GPU, 512 tokens). The sampling batch is ``exoflow.sampling.sample_completions``
with bf16 weights: ``--sample-prompts`` prompts x 2 completions, ``--gen`` new tokens (a
random-weight model rarely emits EOS, so every row runs to the end, as a batch's longest row
does). Prints the median of ``--repeats`` timings after one warm-up, and the peak memory.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {  # GPT-NeoX (Pythia) shapes
    "pythia-2.8b": dict(hidden_size=2560, num_layers=32, num_heads=32, intermediate_size=10240,
                        vocab=50304),
    "pythia-410m": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096,
                        vocab=50304),
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256, vocab=512),
}


def checkpointing(model, on: bool) -> None:
    """Activation checkpointing on or off, in the words of the transformers at hand
    (``activation_checkpointing_*`` from 5.24, ``gradient_checkpointing_*`` before)."""
    new = hasattr(model, "activation_checkpointing_enable")
    if not on:
        (model.activation_checkpointing_disable if new else model.gradient_checkpointing_disable)()
    elif new:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="pythia-2.8b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per alignment micro-batch")
    ap.add_argument("--sample-prompts", type=int, default=32, help="prompts per generate call")
    ap.add_argument("--len", type=int, default=512, help="tokens per training sequence")
    ap.add_argument("--gen", type=int, default=200, help="response / new tokens")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)

    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from exoflow.align import batch_loss
    from exoflow.config import AlignParams
    from exoflow.modeling import EOS_TOKEN, PAD_TOKEN
    from exoflow.sampling import sample_completions

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_gpu_shapes: no CUDA GPU here (use --device cpu --shape tiny)")
    dev = torch.device(a.device)
    s = SHAPES[a.shape]
    cfg = GPTNeoXConfig(vocab_size=s["vocab"], hidden_size=s["hidden_size"],
                        num_hidden_layers=s["num_layers"], num_attention_heads=s["num_heads"],
                        intermediate_size=s["intermediate_size"], max_position_embeddings=2048,
                        rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False,
                        bos_token_id=0, eos_token_id=0, pad_token_id=1)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    amp = dev.type == "cuda" or a.shape == "tiny"

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def peak():
        return torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")

    def timed(fn):
        """(median seconds of ``a.repeats`` calls ``fn(i)`` after one warm-up, the last result);
        the peak memory counter is reset before each call."""
        times, out = [], None
        for i in range(a.repeats + 1):
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            out = fn(i)
            sync()
            if i:
                times.append(time.perf_counter() - t0)
        return statistics.median(times), out

    # ---- one alignment step ----------------------------------------------------------------
    checkpointing(model, True)
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.95), weight_decay=0.0)
    B, K, T, G = a.prompts, 2, a.len, a.gen
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, s["vocab"], (B * K, T), generator=g)
    loss_mask = torch.zeros(B * K, T, dtype=torch.long)
    loss_mask[:, T - G:] = 1
    batch = {"input_ids": ids.to(dev), "attention_mask": torch.ones_like(ids).to(dev),
             "loss_mask": loss_mask.to(dev), "rewards": torch.rand(B, K, generator=g).to(dev),
             "ref_logps": (-2.0 * G * torch.rand(B, K, generator=g)).to(dev)}
    params = AlignParams(loss="exo-rw", data="rm_labels", lr=1e-6, batch_size=B, micro_batch_size=B,
                         max_steps=1, save_every=1)

    def train_step(_):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = batch_loss(model, batch, params)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step, _ = timed(train_step)
    print(f"# bench_gpu_shapes shape={a.shape} params={n_params / 1e9:.3f}B device={a.device} "
          f"torch {torch.__version__}" + (f" {torch.cuda.get_device_name()}" if dev.type == "cuda" else ""))
    print(f"alignment step: {B} prompts x {K} candidates x {T} tokens, fp32 weights + bf16 "
          f"autocast, gradient checkpointing, AdamW: {step:.3f} s (median of {a.repeats}), "
          f"{B * K * T / step:,.0f} tokens/s, peak memory {peak():.1f} GiB")

    # ---- one sampling batch ----------------------------------------------------------------
    opt = None  # free the optimizer states before sampling
    model.zero_grad(set_to_none=True)
    checkpointing(model, False)
    model.config.use_cache = True
    model = model.to(torch.bfloat16).eval()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {EOS_TOKEN: 0, PAD_TOKEN: 1, **{f"w{i}": i for i in range(2, s["vocab"])}}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS_TOKEN))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    tok.padding_side = "left"
    P = T - G
    prompts = [" ".join(f"w{int(x)}" for x in torch.randint(2, s["vocab"], (P - 8 * (i % 4),),
                                                           generator=g))
               for i in range(a.sample_prompts)]
    t, outs = timed(lambda i: sample_completions(
        model, tok, prompts, num_return=2, temperature=0.8, top_k=0, max_new_tokens=G,
        max_len=T, batch_size=a.sample_prompts, seed=i, progress=False))
    new = sum(len(c.split()) for o in outs for c in o)
    print(f"sampling batch: {len(prompts)} prompts (~{P} tokens) x 2 completions x {G} new "
          f"tokens, bf16 weights: {t:.3f} s (median of {a.repeats}), "
          f"{len(prompts) * 2 * G / t:,.0f} generated positions/s ({new} words decoded), "
          f"peak memory {peak():.1f} GiB")


if __name__ == "__main__":
    main()
