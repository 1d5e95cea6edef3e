"""Host time of one decode step per GPT-NeoX layer: the floor under every generated token.

    python benchmarks/bench_decode_step.py [--repeats 200]

A decode step of a causal LM in eager PyTorch launches every layer's operations one by one from
Python. With a model so narrow (hidden 64) that its arithmetic is negligible, the time of one
step (1 row, 1 new token, a KV cache of 128 positions) is that launch cost; the slope between 2
and 16 layers is the cost per layer. benchmarks/paper_cost.py takes it as the least time a
decode step of Pythia-2.8B (32 layers) can take on a GPU host, whatever the batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def step_ms(layers: int, repeats: int, cache_impl: str) -> float:
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, StaticCache

    cfg = GPTNeoXConfig(vocab_size=512, hidden_size=64, num_hidden_layers=layers,
                        num_attention_heads=4, intermediate_size=256, max_position_embeddings=1024)
    torch.manual_seed(0)
    m = GPTNeoXForCausalLM(cfg).eval()
    ids = torch.randint(0, 512, (1, 128))
    with torch.inference_mode():
        if cache_impl == "static":
            cache = StaticCache(config=cfg, max_cache_len=128 + repeats + 8)
            m(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        else:
            cache = m(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
        nxt = torch.zeros(1, 1, dtype=torch.long)
        ts = []
        for i in range(repeats):
            t = time.perf_counter()
            m(input_ids=nxt, cache=cache, use_cache=True, logits_to_keep=1,
              cache_position=torch.tensor([128 + i]))
            ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args(argv)
    C.set_threads()
    rows = []
    for impl in ("dynamic", "static"):
        t2, t16 = step_ms(2, a.repeats, impl), step_ms(16, a.repeats, impl)
        rows.append([impl, f"{t2:.2f}", f"{t16:.2f}", f"{(t16 - t2) / 14:.3f}"])
    print(f"# bench_decode_step  hidden 64, 1 row, KV cache 128, median of {a.repeats} steps")
    print(f"# machine: {C.machine()}")
    print(C.fmt_table(["cache", "2 layers (ms/step)", "16 layers (ms/step)", "per layer (ms)"], rows))


if __name__ == "__main__":
    main()
