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
``no_grad``; with LoRA (``model.lora``) that reference is the policy itself with its adapters
disabled (:mod:`exoflow.lora`), not a second copy.

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

from . import engine as eng
from .align_data import AlignCollator, check_num_candidates, encode_align
from .engine import EngineParams, FromDict, check_optimizer, reference_precision, step_records
from .errors import ExoflowError, ParamsError
from .io import read_json, read_numbered, write_json
from .logps import model_response_logps
from .losses import LOSSES, alignment_loss, group_candidates
from .modeling import load_causal_lm, load_tokenizer
from .refcache import load_ref_cache, reference_dtype

__all__ = ["AlignParams", "batch_loss", "sequence_logps", "train_align"]


@dataclass
class AlignParams(FromDict):
    """One alignment run: config ``align.defaults`` updated with the run's entry, each key
    described in ``schemas/config.schema.yaml`` (definitions.align_params)."""

    loss: str
    data: str
    lr: float
    batch_size: int
    micro_batch_size: int
    max_steps: int
    save_every: int
    beta_r: float = 0.5
    beta_pi: float = 0.5
    temp: float = 0.8
    pref_log_eps: float = -10.0
    num_contrastive: int = 2
    warmup_steps: int = 0
    max_len: int = 512
    max_gen_len: int = 200
    # The paper's optimiser (exact-optimization src/align_stage): Adam (0.9, 0.95), cosine
    # schedule, no weight decay, gradient clipping 1.0.
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    group_by_length: bool = True

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
        if self.max_steps % self.save_every:
            raise ParamsError(
                f"align: max_steps {self.max_steps} is not a multiple of save_every "
                f"{self.save_every}: the steps after the last checkpoint would be trained and "
                "thrown away; make max_steps a multiple of save_every")
        if self.warmup_steps < 0:
            raise ParamsError(f"align.warmup_steps must be >= 0, got {self.warmup_steps}")
        check_optimizer(self, "align")
        if not 0 < self.max_gen_len < self.max_len:
            raise ParamsError(
                f"align: need 0 < max_gen_len < max_len (got {self.max_gen_len}, {self.max_len}) "
                "so that some prompt fits")

    @property
    def num_checkpoints(self) -> int:
        return self.max_steps // self.save_every

    def checkpoint_steps(self) -> list[int]:
        return [k * self.save_every for k in range(1, self.num_checkpoints + 1)]


# ------------------------------------------------------------------------------ the loss


def sequence_logps(model, batch: dict, temperature: float):
    """Summed response log-probs (S,) of the sequences of a collated batch (the LM head runs
    only where a response token is predicted, :func:`exoflow.logps.model_response_logps`)."""
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


_FLOAT_FIELDS = ("rewards", "ref_logps")
ADAPTERS_DISABLED = "adapters disabled"  # ref_model marker: the LoRA policy, adapters off


def _trainer_class():
    import torch

    class AlignTrainer(eng.trainer_class()):
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
            ref_model = self.ref_model
            if ref_model is ADAPTERS_DISABLED and "ref_logps" not in inputs:
                # the reference is the policy with its LoRA adapters off: no second copy
                policy = self.accelerator.unwrap_model(model)
                B, K = inputs["rewards"].shape
                with torch.no_grad(), policy.disable_adapter():
                    ref = sequence_logps(policy, inputs, self.align_params.temp).view(B, K)
                inputs, ref_model = dict(inputs, ref_logps=ref.float()), None
            loss, metrics = batch_loss(model, inputs, self.align_params, ref_model)
            if model.training:
                for k, v in metrics.items():
                    self._metric_sums[k] = self._metric_sums.get(k, 0.0) + v.detach().float()
                    self.add_step_metric(k, v / self.current_gradient_accumulation_steps)
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
    stamp_file = work_dir / eng.PARAMS_FILE
    if stamp_file.exists() and read_json(stamp_file) != eng.jsonable(stamp):
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
    """Every optimizer step: ``step``, ``loss`` and the alignment metrics (each the mean over
    the step's micro-batches and processes; complete after a resume)."""
    return [{("loss" if k == "step_loss" else k): (int(v) if k == "step" else float(v))
             for k, v in e.items()} for e in step_records(trainer)]


# ------------------------------------------------------------------------------ the run


def train_align(policy_init, train_file, out_dir, work_dir, log_dir, params: AlignParams,
                engine: EngineParams, ref_cache=None, reference=None, callbacks=None,
                ref_code: str | None = None) -> dict:
    """Align ``policy_init`` on ``train_file``; write ``ckpt1..ckptn`` and ``train_metrics.json``
    into ``out_dir``.

    Reference log-probs come from ``ref_cache`` (a :mod:`exoflow.refcache` file, checked against
    the data and settings) or, when it is None, from the model ``reference`` (default: the
    policy's initialisation, i.e. the SFT model) in every step. Trainer checkpoints and the
    ``ckpt<k>`` folders live in ``work_dir`` until the end (resumed from if present); TensorBoard
    logs go to ``log_dir``. ``callbacks``: extra ``TrainerCallback``s. ``ref_code``: the code
    hash the cache must have been made with (the workflow's precompute_ref code; None: not
    checked). Returns the metrics also
    written to ``<out_dir>/train_metrics.json``.
    """
    from transformers import set_seed

    out_dir, work_dir = Path(out_dir), Path(work_dir)
    eng.setup_threads(engine)
    set_seed(engine.seed)
    numbered = read_numbered(train_file)
    records = [r for _, r in numbered]
    k = check_num_candidates(records, params.num_contrastive, str(train_file),
                             lines=[n for n, _ in numbered])
    reference = str(reference or policy_init)
    ref_logps = None
    if ref_cache is not None:
        ref_logps = load_ref_cache(ref_cache, data_file=train_file, reference=reference,
                                   temp=params.temp, max_len=params.max_len,
                                   max_gen_len=params.max_gen_len, code=ref_code,
                                   dtype=reference_dtype(engine), records=records,
                                   lines=[n for n, _ in numbered])

    args = eng.make_training_args(params, engine, work_dir, log_dir)
    tok = load_tokenizer(policy_init, padding_side="right")
    model = load_causal_lm(policy_init, dtype="fp32")  # mixed precision keeps fp32 master weights
    model = eng.prepare_model(model, engine, "CAUSAL_LM")
    ref_model = None
    if ref_logps is None and engine.lora and reference == str(policy_init):
        ref_model = ADAPTERS_DISABLED  # the policy itself with its LoRA adapters off
    elif ref_logps is None:  # autocast, when used, comes from the Trainer's loss context
        weights, _ = reference_precision(engine)
        ref_model = load_causal_lm(reference, dtype=weights).to(args.device).eval()
        ref_model.requires_grad_(False)
    train = encode_align(tok, records, params.max_len, params.max_gen_len, ref_logps)

    run = {"stage": "align", "run": out_dir.name, "policy_init": str(policy_init),
           "train": str(train_file), "reference": reference,
           "ref_logps": ("cache" if ref_logps is not None else ADAPTERS_DISABLED
                         if ref_model is ADAPTERS_DISABLED else "model"),
           "align": params.to_dict(), "engine": engine.to_dict()}
    saver = _checkpoint_callback(work_dir, params, tok, run)
    trainer = _trainer_class()(
        model=model, args=args, data_collator=AlignCollator(tok.pad_token_id), train_dataset=train,
        processing_class=tok, align_params=params, ref_model=ref_model,
        run_name=f"train_align {out_dir.name}",
        group_lengths=([max(len(ids) for ids in f["input_ids"]) for f in train]
                       if params.group_by_length else None),
        callbacks=[saver, *(callbacks or [])])
    saver.trainer = trainer
    eng.attach_tensorboard(trainer, log_dir)
    if trainer.accelerator.is_main_process:
        eng.empty_dir(out_dir, keep=(work_dir, log_dir))
        work_dir.mkdir(parents=True, exist_ok=True)
        _prepare_work_dir(work_dir, params, run)
    trainer.accelerator.wait_for_everyone()
    eng.run_trainer(trainer, work_dir, run)

    metrics = {
        "loss_curve": _log_curve(trainer),
        "train_loss": eng.mean_train_loss(trainer),
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
            raise ExoflowError(f"{work_dir}: checkpoints {missing} were not written; delete the "
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
