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

Checkpoints: ``ckpt<k>`` at the optimizer steps :func:`exoflow.schedule.checkpoint_schedule` gives
(k·save_every, or the original's micro-step counter with ``saves_per_epoch``), each a
``save_pretrained`` folder with ``exoflow_params.json``, which records the checkpoint's step,
epoch fraction and the learning rate its last step applied (read from the optimizer). They are written into the work folder
while training (Snakemake deletes a failed job's outputs, and a resumed run must still have the
checkpoints before its resume point), then moved into the output folder at the end, beside
``metrics.json`` (:mod:`exoflow.recipe`; its ``loss_curve`` has the loss's metrics per step).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from .align_data import AlignCollator, check_num_candidates, encode_align
from .config import AlignParams
from .errors import ExoflowError
from .io import read_numbered, write_json
from .logps import model_response_logps
from .losses import alignment_loss, group_candidates, make_loss
from .modeling import load_causal_lm
from .order import visited_records
from .recipe import METRICS_FILE, Recipe
from .refcache import RefCacheError, load_ref_cache
from .runtime import reference_dtype, reference_precision, world_size
from .schedule import Visits, checkpoint_schedule, lr_horizon_steps
from .trainer import ExoTrainer
from .workdir import (
    checkpoint_step,
    last_checkpoint,
    remove_checkpoints,
    save_model,
    stamp_differs,
)

__all__ = ["AlignRecipe", "batch_loss", "sequence_logps", "train_align"]


# ------------------------------------------------------------------------------ the loss


def sequence_logps(model, batch: dict, temperature: float):
    """Summed response log-probs (S,) of the sequences of a collated batch (the LM head runs
    only where a response token is predicted, :func:`exoflow.logps.model_response_logps`)."""
    return model_response_logps(model, batch["input_ids"], batch["attention_mask"],
                                batch["loss_mask"], temperature)


def batch_loss(model, batch: dict, params: AlignParams, ref_model=None):
    """``(loss, metrics)`` of one collated batch: the policy's log-probs against the cached
    ``batch["ref_logps"]`` or, without them, against ``ref_model`` run under no_grad."""
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


class AlignTrainer(ExoTrainer):
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
        missing = inputs.pop("ref_missing", None)
        if missing is not None and bool(missing.any()):  # never trained against a zero
            raise RefCacheError(f"{self.run_name}: a batch of optimizer step "
                                f"{self.state.global_step + 1} holds a record the reference "
                                "cache has no values for (made for other visits); delete the "
                                "cache and run again")
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


# Above this share of groups whose candidates all have one reward, the log says so.
DEGENERATE_WARN = 0.10


def degenerate_groups(records, num_contrastive: int, source: str) -> dict:
    """``{"groups", "degenerate_groups"}``: the groups of N candidates (the loss's groups) and
    how many hold one reward for all (no signal: the loss's gradient is float noise, which Adam
    would still turn into full-size steps). Refused when every group is so, a warning in the
    log above :data:`DEGENERATE_WARN`."""
    n = num_contrastive
    groups = [r["rewards"][i:i + n] for r in records for i in range(0, len(r["rewards"]), n)]
    flat = sum(1 for g in groups if max(g) == min(g))
    if groups and flat == len(groups):
        raise ExoflowError(f"{source}: every group of {n} candidates has equal rewards, so "
                           "alignment has nothing to learn; re-label it (label_rewards) with a "
                           "trained reward model")
    if groups and flat / len(groups) > DEGENERATE_WARN:
        print(f"[exoflow] warning: {flat} of {len(groups)} groups of {n} candidates in {source} "
              f"({100 * flat / len(groups):.0f} %) have equal rewards and carry no signal",
              file=sys.stderr, flush=True)
    return {"groups": len(groups), "degenerate_groups": flat}


# ------------------------------------------------------------------------------ checkpoints


def _ckpt_dirs(folder: Path) -> list[Path]:
    return [p for p in Path(folder).glob("ckpt*") if p.is_dir() and p.name[4:].isdigit()]


class SaveAlignCheckpoints(TrainerCallback):
    """``<work_dir>/ckpt<k>`` at the planned steps (``recipe.schedule``); a folder appears only
    when complete. Each records its step, epoch fraction and the learning rate its last
    optimizer step applied, as the optimizer had it when that step began."""

    def __init__(self, recipe: AlignRecipe):
        self.recipe = recipe
        self.step_lr: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_lr = float(self.recipe.trainer._get_learning_rate())

    def on_step_end(self, args, state, control, **kwargs):
        work_dir, trainer = self.recipe.work_dir, self.recipe.trainer
        step = state.global_step
        for c in self.recipe.schedule:
            if c.step == step:
                self._save(c, step, trainer, work_dir)

    def _save(self, c, step, trainer, work_dir):
        k = c.k
        dest, tmp = work_dir / f"ckpt{k}", work_dir / f".ckpt{k}.tmp"
        main = trainer.accelerator.is_main_process
        if main and tmp.exists():
            shutil.rmtree(tmp)
        save_model(trainer, self.recipe.tokenizer, tmp,
                   dict(self.recipe.stamp(), checkpoint=k, step=step, epoch=c.epoch,
                        lr=self.step_lr, micro_step=c.micro_step))
        if main:
            if dest.exists():
                shutil.rmtree(dest)
            tmp.rename(dest)
        trainer.accelerator.wait_for_everyone()


# ------------------------------------------------------------------------------ the run


class AlignRecipe(Recipe):
    """Align ``base`` (the SFT model) on ``train_file``; write ``ckpt1..ckptn`` and
    ``metrics.json`` into ``out_dir``.

    Reference log-probs come from ``ref_cache`` (a :mod:`exoflow.refcache` file, checked against
    the data and settings) or, when it is None, from the model ``reference`` (default: the
    policy's initialisation, i.e. the SFT model) in every step (with LoRA: the policy with its
    adapters disabled). ``ref_code``: the code hash the cache must have been made with (the
    workflow's precompute_ref code; None: not checked).
    """

    stage = "align"
    trainer_class = AlignTrainer

    def __init__(self, *args, ref_cache=None, reference=None, ref_code: str | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.ref_cache, self.ref_code = ref_cache, ref_code
        self.reference = str(reference or self.base)
        self.saver = SaveAlignCheckpoints(self)

    @property
    def run_name(self) -> str:
        return f"train_align {self.out_dir.name}"

    def load_data(self):
        make_loss(self.params.loss, self.params.to_dict(), f"{self.run_name}: loss")  # early
        numbered = read_numbered(self.train_file)
        self.train_records = [r for _, r in numbered]
        lines = [n for n, _ in numbered]
        self.num_candidates = check_num_candidates(
            self.train_records, self.params.num_contrastive, str(self.train_file), lines=lines)
        self.degenerate = degenerate_groups(self.train_records, self.params.num_contrastive,
                                            str(self.train_file))
        n, procs, where = len(self.train_records), world_size(), f"train_align {self.out_dir.name}"
        self.schedule = checkpoint_schedule(self.params, n, procs, where)
        self.lr_horizon = lr_horizon_steps(self.params, n, procs)
        print(f"[exoflow] {where}: {n} prompts, {procs} process(es); checkpoints at optimizer "
              f"steps {[c.step for c in self.schedule]} of {self.params.max_steps}; the "
              f"{self.params.lr_scheduler} schedule decays over {self.lr_horizon} steps",
              flush=True)
        self.ref_logps = None
        if self.ref_cache is not None:
            p = self.params
            self.ref_logps = load_ref_cache(
                self.ref_cache, data_file=self.train_file, reference=self.reference,
                temp=p.temp, max_len=p.max_len, max_gen_len=p.max_gen_len, code=self.ref_code,
                dtype=reference_dtype(self.rt), records=self.train_records, lines=lines,
                eos_after_cut=p.eos_after_cut, visits=self.visits)
            self.ref_lines = lines

    def load_model(self):
        return load_causal_lm(self.base, dtype="fp32")  # mixed precision keeps fp32 masters

    def reference_model(self):
        """The reference run in every step: None with a cache, the LoRA policy's adapters
        disabled, or the reference model in the training precision (autocast, when used,
        comes from the Trainer's loss context)."""
        if self.ref_logps is not None:
            return None
        if self.rt.lora and self.reference == self.base:
            return ADAPTERS_DISABLED
        weights, _ = reference_precision(self.rt)
        model = load_causal_lm(self.reference, dtype=weights).to(self.args.device).eval()
        return model.requires_grad_(False)

    @property
    def visits(self) -> Visits:
        p = self.params
        return Visits(self.rt.seed, p.max_steps, p.batch_size, p.group_by_length)

    def encode(self, records):
        p = self.params
        feats = encode_align(self.tokenizer, records, p.max_len, p.max_gen_len, self.ref_logps,
                             eos_after_cut=p.eos_after_cut)
        if self.ref_logps is not None and any(r is None for r in self.ref_logps):
            lengths = [self.group_length(f) for f in feats] if p.group_by_length else None
            visited = visited_records(self.visits, len(feats), lengths)
            missing = [i for i in visited if self.ref_logps[i] is None]
            if missing:  # the same function chose them: a cache made elsewhere, or a bug
                raise RefCacheError(
                    f"{self.ref_cache}: no values for record {self.ref_lines[missing[0]]} of "
                    f"{self.train_file} ({len(missing)} of the {len(visited)} records this run "
                    "visits); delete the cache and run again")
        return feats

    def collator(self):
        return AlignCollator(self.tokenizer.pad_token_id)

    def group_length(self, feature):
        return max(len(ids) for ids in feature["input_ids"])

    def callbacks(self):
        return [self.saver]

    def trainer_kwargs(self):
        self.ref_model = self.reference_model()
        return {"align_params": self.params, "ref_model": self.ref_model,
                "lr_horizon": self.lr_horizon, "seeded_order": True}

    def stamp(self):
        ref = ("cache" if self.ref_logps is not None else ADAPTERS_DISABLED
               if getattr(self, "ref_model", None) is ADAPTERS_DISABLED else "model")
        return {**super().stamp(), "run": self.out_dir.name, "reference": self.reference,
                "ref_logps": ref}

    def before_train(self, trainer):
        """Drop what a resume cannot use: ``ckpt<k>`` folders made with other parameters, and
        Trainer checkpoints past a ``ckpt<k>`` that is missing (it would never be re-made)."""
        work = self.work_dir
        work.mkdir(parents=True, exist_ok=True)
        if stamp_differs(work, self.stamp()):
            for d in _ckpt_dirs(work):
                shutil.rmtree(d)
            return  # run_trainer drops the Trainer checkpoints too
        last = last_checkpoint(work)
        if last:
            missing = [c.k for c in self.schedule if c.step <= checkpoint_step(last)
                       and not (work / f"ckpt{c.k}" / "config.json").exists()]
            if missing:
                print(f"[exoflow] {work}: ckpt{missing[0]} is missing before {last}; starting "
                      "over", flush=True)
                remove_checkpoints(work)

    def evaluate(self, trainer):
        return {"num_candidates": self.num_candidates, **self.degenerate,
                "checkpoint_steps": [c.step for c in self.schedule],
                "checkpoints": [c.to_dict() for c in self.schedule],
                "lr_horizon_steps": self.lr_horizon,
                "ref_logps": self.stamp()["ref_logps"]}

    def finish(self, trainer, metrics):
        """Move the checkpoints from the work folder into ``out_dir`` beside metrics.json."""
        if trainer.is_world_process_zero():
            work, n = self.work_dir, self.params.num_checkpoints
            missing = [j for j in range(1, n + 1) if not (work / f"ckpt{j}" / "config.json").exists()]
            if missing:
                raise ExoflowError(f"{work}: checkpoints {missing} were not written; delete the "
                                   "folder and run again")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for j in range(1, n + 1):
                dest = self.out_dir / f"ckpt{j}"
                if dest.exists():  # Snakemake creates the output folders beforehand
                    shutil.rmtree(dest)
                shutil.move(str(work / f"ckpt{j}"), str(dest))
            write_json(self.out_dir / METRICS_FILE, metrics)
            remove_checkpoints(work)
        trainer.accelerator.wait_for_everyone()


def train_align(policy_init, train_file, out_dir, work_dir, log_dir, params: AlignParams,
                runtime, ref_cache=None, reference=None, callbacks=None,
                ref_code: str | None = None) -> dict:
    """:class:`AlignRecipe` run; returns the metrics also written to
    ``<out_dir>/metrics.json``."""
    return AlignRecipe(policy_init, train_file, out_dir, work_dir, log_dir, params, runtime,
                       callbacks=callbacks, ref_cache=ref_cache, reference=reference,
                       ref_code=ref_code).run()
