"""Shared set-up of the benchmarks: real HH pairs, a tokenizer trained on them, seeded models.

Nothing here copies HH text into the repository: the pairs are read from
``../shared/hh-rlhf-sample/harmless-base`` at run time, and the tokenizer / model folders it
makes live under ``benchmarks/.cache`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
CACHE = ROOT / "benchmarks" / ".cache"
HH_PATH = (ROOT / ".." / "shared" / "hh-rlhf-sample" / "harmless-base").resolve()
VOCAB = 4096
THREADS = 2

# The two model sizes (GPT-NeoX, the Pythia architecture, built by exoflow.modeling).
SIZES = {
    "tiny": {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 512,
             "max_position_embeddings": 1024},
    "large": {"hidden_size": 512, "num_layers": 6, "num_heads": 8, "intermediate_size": 2048,
              "max_position_embeddings": 1024},
}


def set_threads(n: int = THREADS) -> None:
    import torch

    torch.set_num_threads(n)


def hh_pairs(split: str = "train") -> list[dict]:
    """Preprocessed real HH pairs ``{"prompt", "chosen", "rejected"}`` (file order)."""
    from exoflow.data import prepare_split

    pairs, _ = prepare_split({"source": "local", "path": str(HH_PATH)}, split, 0)
    return pairs


def tokenizer_dir() -> Path:
    """A byte-level BPE tokenizer (vocab 4096) trained on the train pairs, cached."""
    from exoflow.modeling import train_tokenizer

    d = CACHE / f"tokenizer_v{VOCAB}"
    if not (d / "tokenizer.json").exists():
        pairs = hh_pairs("train")
        texts = [p["prompt"] + p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
        d.mkdir(parents=True, exist_ok=True)
        train_tokenizer(texts, VOCAB, d)
    return d


def load_tok(padding_side: str = "right"):
    from exoflow.modeling import load_tokenizer

    return load_tokenizer(str(tokenizer_dir()), padding_side=padding_side)


def model_dir(size: str, seed: int = 0) -> Path:
    """``save_pretrained`` folder of the seeded GPT-NeoX of ``size`` (same init for everyone)."""
    from exoflow.modeling import build_scratch_model

    d = CACHE / f"model_{size}_s{seed}"
    if not (d / "config.json").exists():
        tok = load_tok()
        model = build_scratch_model(SIZES[size], tok, seed=seed)
        d.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(d), safe_serialization=True)
        tok.save_pretrained(str(d))
    return d


def n_params(model, embeddings: bool = True) -> int:
    n = sum(p.numel() for p in model.parameters())
    if not embeddings:
        n -= model.get_input_embeddings().weight.numel()
    return n


def rss_peak_mib() -> float:
    """Peak resident set size of this process so far (MiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_now_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def fmt_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (x + 2) for x in w) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def machine() -> str:
    import platform

    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average now {load()}")


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *a):
        self.s = time.perf_counter() - self.t0


def dump(obj, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=1))


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def all_position_head_logps(model, batch, temperature):
    """Summed response log-probs with the LM head over every position (the original scripts'
    and trl's way on the CPU), the response positions picked from the (S, T, V) logits; the
    pipeline's ``exoflow.align.sequence_logps`` applies the head at response positions only."""
    from exoflow.logps import response_logps

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   use_cache=False).logits
    return response_logps(logits, batch["input_ids"], batch["loss_mask"], temperature)
