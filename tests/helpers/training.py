"""Tiny models and the training stages run on them (SFT, RM, alignment), with step callbacks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from .records import k4_records, make_records, p2r_records


def make_base(folder: Path) -> Path:
    """Tokenizer (byte-level BPE, 300 tokens) + a random 2-layer, hidden-64 GPT-NeoX."""
    from exoflow.modeling import build_scratch_model, train_tokenizer

    texts = [r["prompt"] + r["chosen"] + r["rejected"] for r in make_records(80)]
    tok = train_tokenizer(texts, 300, folder, model_max_length=2048)
    scratch = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                   max_position_embeddings=512)
    build_scratch_model(scratch, tok, seed=0).save_pretrained(str(folder))
    return folder


def make_data(folder: Path) -> tuple[Path, Path]:
    """64 training and 16 test pairs of :func:`make_records`."""
    from exoflow.io import write_records

    folder.mkdir(parents=True, exist_ok=True)
    write_records(folder / "train.jsonl", make_records(64))
    write_records(folder / "test.jsonl", make_records(16, offset=64))
    return folder / "train.jsonl", folder / "test.jsonl"


# ---- parameters --------------------------------------------------------------------------------


def tiny_stage(**kw) -> dict:
    """64 records, 8 per step (2 micro-batches of 4): 8 steps per epoch."""
    return dict(dict(lr=3e-3, epochs=2, batch_size=8, micro_batch_size=4, max_len=64,
                     max_gen_len=24), **kw)


def tiny_runtime(**kw):
    """A CPU Runtime, one thread, a Trainer checkpoint every 2 steps; ``kw`` are engine keys
    or the Runtime's own (dtype, lora, seed)."""
    from exoflow.config import EngineParams, Runtime

    own = {k: kw.pop(k) for k in ("dtype", "lora", "seed") if k in kw}
    engine = EngineParams(**dict(dict(logging_steps=1, checkpoint_every=2, num_threads=1), **kw))
    return Runtime(engine=engine, **dict(dict(seed=0), **own))


def train_stage(stage: str, data, folder: Path, **runtime):
    """SFT or the RM (``stage``) trained from ``data.base`` on ``data.train`` (the ``tiny``
    fixture's), :func:`tiny_stage` parameters, into ``folder``/out; ``(metrics, folder)``."""
    from exoflow.config import RMParams, SFTParams
    from exoflow.rm import train_rm
    from exoflow.sft import train_sft

    train, cls = {"sft": (train_sft, SFTParams), "rm": (train_rm, RMParams)}[stage]
    metrics = train(data.base, data.train, data.test, folder / "out", folder / "work",
                    folder / "logs", cls.from_dict(tiny_stage()), tiny_runtime(**runtime))
    return SimpleNamespace(metrics=metrics, dir=folder, test=data.test)


def align_params(**kw):
    """16 prompts, 4 per step in 2 micro-batches of 2: 4 steps per epoch."""
    from exoflow.config import AlignParams

    d = dict(loss="exo-rw", data="rm_labels", lr=1e-3, batch_size=4, micro_batch_size=2,
             max_steps=4, save_every=2, max_len=64, max_gen_len=24, temp=0.8)
    d.update(kw)
    return AlignParams.from_dict(d)


def make_align_data(root: Path) -> SimpleNamespace:
    """Alignment data (p2r-like K=2, rm_labels-like K=4), an "SFT" model (:func:`make_base`) and
    the K=4 reference cache of :func:`align_params`."""
    from exoflow.io import write_records
    from exoflow.refcache import precompute_ref

    root.mkdir(parents=True, exist_ok=True)
    write_records(root / "p2r.jsonl", p2r_records())
    write_records(root / "k4.jsonl", k4_records())
    sft = make_base(root / "sft")
    p = align_params()
    cache = root / "ref_k4.jsonl"
    precompute_ref(sft, root / "k4.jsonl", cache, p.temp, p.max_len, p.max_gen_len,
                   batch_size=8, progress=False)
    return SimpleNamespace(root=root, sft=sft, p2r=root / "p2r.jsonl", k4=root / "k4.jsonl",
                           cache=cache)


def run_align(data, name, params, **kw):
    """:func:`exoflow.align.train_align` on :func:`make_align_data`'s ``data`` into
    ``<root>/<name>/``; ``kw``: ``train`` (default the K=4 records), ``engine`` (keys of
    :func:`tiny_runtime`) and train_align's own. Returns (metrics, folder)."""
    from exoflow.align import train_align

    d = data.root / name
    kw.setdefault("ref_cache", data.cache)
    m = train_align(data.sft, kw.pop("train", data.k4), d / "out", d / "work", d / "logs",
                    params, tiny_runtime(**kw.pop("engine", {})), **kw)
    return m, d


class Killed(RuntimeError):
    pass


def step_callbacks(kill_at=None, seen=None) -> list:
    """A TrainerCallback recording each step into ``seen`` and raising :class:`Killed` at
    step ``kill_at``."""
    from transformers import TrainerCallback

    class Cb(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if seen is not None:
                seen.append(state.global_step)
            if state.global_step == kill_at:
                raise Killed(f"killed at step {kill_at}")

    return [Cb()]


# ---- the workflow and its scripts ----------------------------------------------------------------
