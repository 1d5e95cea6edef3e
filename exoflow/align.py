"""Alignment (EXO / DPO) of the SFT policy on K candidates per prompt.

Data: records ``{"prompt", "completions": [y_1..y_K], "rewards": [r_1..r_K]}`` (the RM-labelled
SFT samples for ``*-rw`` runs, the preference pairs as ``[chosen, rejected]`` / ``[1, 0]`` for
``*-pref`` runs). Every record has the same K, a multiple of N = ``num_contrastive``.

A batch is whole prompts with all their candidates: B prompts give B·K sequences, in the order
prompt 0's candidates, then prompt 1's, ..., right-padded to the batch's longest (the token layout
of :mod:`exoflow.batching`, EOS appended). For each candidate

    ℓ_i = log π_θ^τ(y_i|x) − log π_ref^τ(y_i|x)      (:func:`exoflow.logps.model_response_logps`)

summed over the response tokens (EOS included), τ = ``temp``; the K candidates of a prompt are
split into K/N groups of N (:func:`exoflow.losses.group_candidates`) and the loss is
:func:`exoflow.losses.alignment_loss` averaged over the groups.

The reference log-probs come from a cache made once by :mod:`exoflow.refcache` (the reference is
frozen) or, with ``precompute_ref: false``, from the reference model run in every step under
``no_grad``.

Checkpoints: ``ckpt<k>`` (k = 1..max_steps // save_every) at optimizer step k·save_every, each a
``save_pretrained`` folder with ``exoflow_params.json``. They are written into the work folder
while training (Snakemake deletes a failed job's outputs, and a resumed run must still have the
checkpoints before its resume point), then moved into the output folder at the end.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from .batching import Encoded, encode_pair, pad_batch
from .engine import EngineParams, ParamsError, _doc, _FromDict
from .losses import LOSSES, alignment_loss, group_candidates

__all__ = [
    "AlignCollator",
    "AlignParams",
    "batch_loss",
    "check_num_candidates",
    "encode_align",
    "pad_candidates",
    "reference_precision",
    "train_align",
]


@dataclass
class AlignParams(_FromDict):
    """One alignment run: config ``align.defaults`` updated with the run's entry."""

    loss: str = _doc(f"Alignment loss, one of {sorted(LOSSES)}.")
    data: str = _doc("Alignment data set: rm_labels (SFT samples + RM rewards) or p2r (pairs).")
    lr: float = _doc("Peak learning rate (AdamW); the paper: 1e-6.")
    batch_size: int = _doc("Prompts per optimizer step, across processes and accumulation.")
    micro_batch_size: int = _doc("Prompts per process per forward (each with all K candidates).")
    max_steps: int = _doc("Optimizer steps.")
    save_every: int = _doc("Steps between checkpoints; ckpt k is saved at step k * save_every.")
    beta_r: float = _doc("Target temperature: q = softmax(r / beta_r) for *-rw.", 0.5)
    beta_pi: float = _doc("Policy scores s = beta_pi * (log pi - log pi_ref).", 0.5)
    temp: float = _doc("tau: log-probs of logits / tau, for the policy and the reference.", 0.8)
    pref_log_eps: float = _doc("log q of the losers for *-pref (the original code's -10).", -10.0)
    num_contrastive: int = _doc("Candidates per group N; K must be a multiple of N.", 2)
    warmup_steps: int = _doc("Linear warmup steps from 0.", 0)
    max_len: int = _doc("Prompt + response tokens; the prompt is left-truncated to fit.", 512)
    max_gen_len: int = _doc("Response tokens kept (right-truncated), before the EOS.", 200)
    # The paper's optimiser (exact-optimization src/align_stage): Adam (0.9, 0.95), cosine
    # schedule, no weight decay, gradient clipping 1.0.
    adam_beta1: float = _doc("AdamW beta1.", 0.9)
    adam_beta2: float = _doc("AdamW beta2.", 0.95)
    weight_decay: float = _doc("AdamW weight decay.", 0.0)
    lr_scheduler: str = _doc("transformers scheduler name.", "cosine")
    max_grad_norm: float = _doc("Gradient clipping norm.", 1.0)
    group_by_length: bool = _doc(
        "Batches of prompts of similar length (engine.length_grouped_sampler over each prompt's "
        "longest candidate, seeded), which pads less than random batches; false: uniformly "
        "random batches.", True)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ParamsError(f"align loss {self.loss!r}: use one of {sorted(LOSSES)}")
        for name in ("lr", "beta_r", "beta_pi", "temp"):
            if not getattr(self, name) > 0:
                raise ParamsError(f"align.{name} must be > 0, got {getattr(self, name)}")
        if not (math.isfinite(self.pref_log_eps) and self.pref_log_eps < 0):
            raise ParamsError(f"align.pref_log_eps must be a finite negative number, "
                              f"got {self.pref_log_eps}")
        if isinstance(self.num_contrastive, bool) or int(self.num_contrastive) < 2:
            raise ParamsError(f"align.num_contrastive must be an integer >= 2, "
                              f"got {self.num_contrastive}")
        if self.batch_size < 1 or self.micro_batch_size < 1:
            raise ParamsError("align: batch_size and micro_batch_size must be >= 1")
        if self.batch_size % self.micro_batch_size:
            raise ParamsError(
                f"align: batch_size {self.batch_size} is not a multiple of micro_batch_size "
                f"{self.micro_batch_size}; set batch_size = micro_batch_size x GPUs x accumulation")
        if self.max_steps < 1 or self.save_every < 1:
            raise ParamsError("align: max_steps and save_every must be >= 1")
        if self.save_every > self.max_steps:
            raise ParamsError(
                f"align: save_every {self.save_every} > max_steps {self.max_steps} gives no "
                "checkpoint; lower save_every")
        if self.warmup_steps < 0:
            raise ParamsError(f"align.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 < self.max_gen_len < self.max_len:
            raise ParamsError(
                f"align: need 0 < max_gen_len < max_len (got {self.max_gen_len}, {self.max_len}) "
                "so that some prompt fits")

    @property
    def num_checkpoints(self) -> int:
        return self.max_steps // self.save_every

    def checkpoint_steps(self) -> list[int]:
        return [k * self.save_every for k in range(1, self.num_checkpoints + 1)]


# ------------------------------------------------------------------------------ data


def check_num_candidates(records, num_contrastive: int, source: str = "alignment data") -> int:
    """The common K of ``records``; refuses unequal K, K % N != 0, or rewards of another length."""
    if not records:
        raise ParamsError(f"{source}: no records")
    ks = {len(r["completions"]) for r in records}
    if len(ks) != 1:
        raise ParamsError(f"{source}: records have different numbers of completions {sorted(ks)}; "
                          "a batch needs the same K for every prompt")
    (k,) = ks
    for i, r in enumerate(records):
        if len(r["rewards"]) != k:
            raise ParamsError(f"{source}: record {i} has {len(r['rewards'])} rewards for {k} "
                              "completions")
    if k % num_contrastive:
        raise ParamsError(
            f"{source}: each prompt has K={k} completions, which is not a multiple of "
            f"num_contrastive N={num_contrastive}; set num_contrastive to a divisor of {k} "
            f"(or sample a multiple of {num_contrastive} completions per prompt)")
    return k


def encode_align(tokenizer, records, max_len: int, max_gen_len: int, ref_logps=None) -> list[dict]:
    """One feature per prompt: ``input_ids`` (K lists), ``n_prompt`` (K ints), ``rewards``
    (K floats) and, when given (one list of K per record), ``ref_logps``."""
    out = []
    for i, r in enumerate(records):
        enc = [encode_pair(tokenizer, r["prompt"], y, max_len, max_gen_len, add_eos=True)
               for y in r["completions"]]
        f = {"input_ids": [e.input_ids for e in enc], "n_prompt": [e.n_prompt for e in enc],
             "rewards": [float(x) for x in r["rewards"]]}
        if ref_logps is not None:
            f["ref_logps"] = [float(x) for x in ref_logps[i]]
        out.append(f)
    return out


def pad_candidates(seqs: list[Encoded], pad_id: int) -> dict:
    """Right-padded ``input_ids``, ``attention_mask``, ``loss_mask`` (S, T) for log-probs."""
    b = pad_batch(seqs, pad_id, "right")
    # No logits predict the first token, so it is never scored (matters only for an empty prompt).
    b["loss_mask"][:, 0] = 0
    return b


class AlignCollator:
    """B prompts x K candidates -> one batch of B·K sequences, candidates of a prompt adjacent.

    Returns ``input_ids``, ``attention_mask``, ``loss_mask`` (B·K, T) padded to the batch's
    longest sequence, ``rewards`` (B, K) float32 and, when every feature has them,
    ``ref_logps`` (B, K) float32.
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        seqs = [Encoded(ids, n) for f in features for ids, n in zip(f["input_ids"], f["n_prompt"])]
        out = pad_candidates(seqs, self.pad_id)  # (B·K, T)
        out["rewards"] = torch.tensor([f["rewards"] for f in features], dtype=torch.float32)
        if all("ref_logps" in f for f in features):
            out["ref_logps"] = torch.tensor([f["ref_logps"] for f in features], dtype=torch.float32)
        return out


# ------------------------------------------------------------------------------ the loss


def sequence_logps(model, batch: dict, temperature: float):
    """Summed response log-probs (S,) of the sequences of a collated batch (the LM head runs
    only where a response token is predicted, :func:`exoflow.logps.model_response_logps`)."""
    from .logps import model_response_logps

    return model_response_logps(model, batch["input_ids"], batch["attention_mask"],
                                batch["loss_mask"], temperature)


def batch_loss(model, batch: dict, params: AlignParams, ref_model=None):
    """``(loss, metrics)`` of one collated batch: the policy's log-probs against the cached
    ``batch["ref_logps"]`` or, without them, against ``ref_model`` run under no_grad."""
    import torch

    B, K = batch["rewards"].shape
    policy = sequence_logps(model, batch, params.temp).view(B, K)  # (B, K)
    if "ref_logps" in batch:
        ref = batch["ref_logps"].to(policy.dtype)
    else:
        if ref_model is None:
            raise ValueError("the batch has no ref_logps and no reference model was given")
        with torch.no_grad():
            ref = sequence_logps(ref_model, batch, params.temp).view(B, K)
    n = params.num_contrastive
    return alignment_loss(
        params.loss,
        group_candidates(policy, n),  # (B·K/N, N)
        group_candidates(ref, n),
        group_candidates(batch["rewards"].to(policy.device), n),
        params.beta_pi,
        params.beta_r,
        params.pref_log_eps,
    )


def reference_precision(engine: EngineParams) -> tuple[str, str | None]:
    """``(weights dtype, autocast dtype or None)`` that run the reference as training runs the
    policy, so that log π_θ − log π_ref starts at 0 rather than at the rounding difference of
    two precisions: fp32 on the CPU or with dtype fp32; the dtype's weights under DeepSpeed (it
    converts the model, no autocast); fp32 weights under autocast otherwise (the Trainer's amp).
    """
    from .engine import on_cpu

    if on_cpu(engine) or engine.dtype == "fp32":
        return "fp32", None
    if engine.deepspeed:
        return engine.dtype, None
    return "fp32", engine.dtype


_FLOAT_FIELDS = ("rewards", "ref_logps")


def _trainer_class():
    import torch

    from .engine import trainer_class

    class AlignTrainer(trainer_class()):
        """Trainer with the alignment loss; logs :func:`alignment_loss`'s metrics (averaged over
        the micro-batches since the last log and over processes) next to ``loss``."""

        loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it by accumulation

        def __init__(self, *args, align_params: AlignParams, ref_model=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.align_params = align_params
            self.ref_model = ref_model
            self._metric_sums: dict = {}
            self._metric_count = 0

        def _prepare_inputs(self, inputs):
            # The Trainer would cast float tensors to DeepSpeed's bf16/fp16, which cannot hold
            # summed log-probs of a few hundred nats to better than ~1: keep them fp32.
            keep = {k: inputs.pop(k) for k in _FLOAT_FIELDS if k in inputs}
            inputs = super()._prepare_inputs(inputs)
            for k, v in keep.items():
                inputs[k] = v.to(device=self.args.device, dtype=torch.float32)
            return inputs

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, metrics = batch_loss(model, inputs, self.align_params, self.ref_model)
            if model.training:
                for k, v in metrics.items():
                    self._metric_sums[k] = self._metric_sums.get(k, 0.0) + v.detach().float()
                self._metric_count += 1
            return (loss, metrics) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            if "loss" in logs and self._metric_count:
                names = sorted(self._metric_sums)
                t = torch.stack([self._metric_sums[k] for k in names]) / self._metric_count
                if self.args.world_size > 1:
                    t = self.accelerator.reduce(t, reduction="mean")
                logs.update({k: float(v) for k, v in zip(names, t.tolist())})
                self._metric_sums, self._metric_count = {}, 0
            return super().log(logs, *args, **kwargs)

    return AlignTrainer


# ------------------------------------------------------------------------------ checkpoints


def _ckpt_dirs(folder: Path) -> list[Path]:
    return [p for p in Path(folder).glob("ckpt*") if p.is_dir() and p.name[4:].isdigit()]


def _checkpoint_callback(work_dir: Path, params: AlignParams, tokenizer, run_params: dict):
    from transformers import TrainerCallback

    from . import engine as eng

    class SaveAlignCheckpoints(TrainerCallback):
        """``<work_dir>/ckpt<k>`` at step k·save_every; a folder appears only when complete."""

        trainer = None  # set once the Trainer exists

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if step % params.save_every or step // params.save_every > params.num_checkpoints:
                return
            k = step // params.save_every
            dest = work_dir / f"ckpt{k}"
            tmp = work_dir / f".ckpt{k}.tmp"
            main = self.trainer.accelerator.is_main_process
            if main and tmp.exists():
                shutil.rmtree(tmp)
            model = self.trainer.accelerator.unwrap_model(self.trainer.model)
            use_cache = model.config.use_cache
            eng.save_final(self.trainer, tokenizer, tmp,
                           dict(run_params, checkpoint=k, step=step))
            model.config.use_cache = use_cache
            if main:
                if dest.exists():
                    shutil.rmtree(dest)
                tmp.rename(dest)
            self.trainer.accelerator.wait_for_everyone()

    return SaveAlignCheckpoints()


def _prepare_work_dir(work_dir: Path, params: AlignParams, stamp: dict) -> None:
    """Drop what a resume cannot use: ``ckpt<k>`` folders made with other parameters, and
    Trainer checkpoints past a ``ckpt<k>`` that is missing (it would never be re-made)."""
    from . import engine as eng
    from .io import read_json

    stamp_file = work_dir / eng.PARAMS_FILE
    if stamp_file.exists() and read_json(stamp_file) != eng._jsonable(stamp):
        for p in _ckpt_dirs(work_dir):
            shutil.rmtree(p)
        return  # run_trainer drops the Trainer checkpoints too
    last = eng.last_checkpoint(work_dir)
    if last:
        step = int(Path(last).name.split("-")[1])
        missing = [k for k in range(1, min(step // params.save_every, params.num_checkpoints) + 1)
                   if not (work_dir / f"ckpt{k}" / "config.json").exists()]
        if missing:
            print(f"[exoflow] {work_dir}: ckpt{missing[0]} is missing before {last}; starting over",
                  flush=True)
            eng.remove_checkpoints(work_dir)


def _log_curve(trainer) -> list[dict]:
    """Every logged training step: ``step``, ``loss`` and the alignment metrics."""
    skip = {"epoch", "grad_norm", "learning_rate"}
    return [{k: (int(v) if k == "step" else float(v)) for k, v in e.items() if k not in skip}
            for e in trainer.state.log_history if "loss" in e and "step" in e]


# ------------------------------------------------------------------------------ the run


def train_align(policy_init, train_file, out_dir, work_dir, log_dir, params: AlignParams,
                engine: EngineParams, ref_cache=None, reference=None, callbacks=None) -> dict:
    """Align ``policy_init`` on ``train_file``; write ``ckpt1..ckptn`` and ``train_metrics.json``
    into ``out_dir``.

    Reference log-probs come from ``ref_cache`` (a :mod:`exoflow.refcache` file, checked against
    the data and settings) or, when it is None, from the model ``reference`` (default: the
    policy's initialisation, i.e. the SFT model) in every step. Trainer checkpoints and the
    ``ckpt<k>`` folders live in ``work_dir`` until the end (resumed from if present); TensorBoard
    logs go to ``log_dir``. ``callbacks``: extra ``TrainerCallback``s. Returns the metrics also
    written to ``<out_dir>/train_metrics.json``.
    """
    from transformers import set_seed

    from . import engine as eng
    from .io import read_records, write_json
    from .modeling import load_causal_lm, load_tokenizer
    from .refcache import load_ref_cache

    out_dir, work_dir = Path(out_dir), Path(work_dir)
    eng.setup_threads(engine)
    set_seed(engine.seed)
    records = read_records(train_file)
    k = check_num_candidates(records, params.num_contrastive, str(train_file))
    reference = str(reference or policy_init)
    ref_logps = None
    if ref_cache is not None:
        ref_logps = load_ref_cache(ref_cache, data_file=train_file, reference=reference,
                                   temp=params.temp, max_len=params.max_len,
                                   max_gen_len=params.max_gen_len)

    args = eng.make_training_args(params, engine, work_dir, log_dir)
    tok = load_tokenizer(policy_init, padding_side="right")
    model = load_causal_lm(policy_init, dtype="fp32")  # mixed precision keeps fp32 master weights
    ref_model = None
    if ref_logps is None:  # autocast, when used, comes from the Trainer's loss context
        weights, _ = reference_precision(engine)
        ref_model = load_causal_lm(reference, dtype=weights).to(args.device).eval()
        ref_model.requires_grad_(False)
    train = encode_align(tok, records, params.max_len, params.max_gen_len, ref_logps)

    run = {"stage": "align", "run": out_dir.name, "policy_init": str(policy_init),
           "train": str(train_file), "reference": reference,
           "ref_logps": "cache" if ref_logps is not None else "model",
           "align": params.to_dict(), "engine": engine.to_dict()}
    saver = _checkpoint_callback(work_dir, params, tok, run)
    trainer = _trainer_class()(
        model=model, args=args, data_collator=AlignCollator(tok.pad_token_id), train_dataset=train,
        processing_class=tok, align_params=params, ref_model=ref_model,
        group_lengths=([max(len(ids) for ids in f["input_ids"]) for f in train]
                       if params.group_by_length else None),
        callbacks=[saver, *(callbacks or [])])
    saver.trainer = trainer
    eng.attach_tensorboard(trainer, log_dir)
    if trainer.accelerator.is_main_process:
        work_dir.mkdir(parents=True, exist_ok=True)
        _prepare_work_dir(work_dir, params, run)
    trainer.accelerator.wait_for_everyone()
    out = eng.run_trainer(trainer, work_dir, run)

    metrics = {
        "loss_curve": _log_curve(trainer),
        "train_loss": float(out.training_loss),
        "global_step": int(trainer.state.global_step),
        "resumed_from": trainer.resumed_from,
        "run": eng.run_info(trainer),
        "num_train": len(train),
        "num_candidates": k,
        "checkpoint_steps": params.checkpoint_steps(),
        "ref_logps": run["ref_logps"],
    }
    if trainer.is_world_process_zero():
        missing = [j for j in range(1, params.num_checkpoints + 1)
                   if not (work_dir / f"ckpt{j}" / "config.json").exists()]
        if missing:
            raise RuntimeError(f"{work_dir}: checkpoints {missing} were not written; delete the "
                               "folder and run again")
        out_dir.mkdir(parents=True, exist_ok=True)
        for j in range(1, params.num_checkpoints + 1):
            dest = out_dir / f"ckpt{j}"
            if dest.exists():  # Snakemake creates the output folders beforehand
                shutil.rmtree(dest)
            shutil.move(str(work_dir / f"ckpt{j}"), str(dest))
        write_json(out_dir / "train_metrics.json", metrics)
        eng.remove_checkpoints(work_dir)
    trainer.accelerator.wait_for_everyone()
    return metrics
