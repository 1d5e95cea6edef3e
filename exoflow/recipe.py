"""The one recipe every training stage fills in (SFT, the reward model, alignment).

:meth:`Recipe.run` is the whole job, in this order (the order of the random draws too, so that a
seed gives the same run): threads and seed, the stage's data (:meth:`Recipe.load_data`), the
``TrainingArguments``, the tokenizer, the model (:meth:`Recipe.load_model`, wrapped in LoRA
adapters when ``model.lora`` is set), the training features (:meth:`Recipe.encode`), the
Trainer; then training, resumed from the work folder when it holds a checkpoint made with the
same parameters; then :meth:`Recipe.evaluate`; then :meth:`Recipe.finish`, which saves the model
and writes ``metrics.json``. A stage overrides the hooks and nothing else::

    class SFTRecipe(Recipe):
        stage = "sft"
        def load_model(self): ...
        def encode(self, records): ...
        def collator(self): ...
        def evaluate(self, trainer): ...

``metrics.json`` of every stage: ``loss_curve`` (every optimizer step: ``step``, ``loss`` and the
stage's per-step metrics), ``train_loss``, ``global_step``, ``resumed_from``, ``run``
(processes, precision, parameter counts, ...), ``num_train`` and what :meth:`Recipe.evaluate`
adds.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback, set_seed

from .config import OptimParams, Runtime
from .io import read_records, write_json
from .modeling import load_tokenizer
from .runtime import setup_threads
from .signals import GracefulStop, Stopped
from .trainer import (
    ExoTrainer,
    attach_tensorboard,
    loss_curve,
    make_training_args,
    mean_train_loss,
    run_info,
    step_seconds,
)
from .workdir import empty_dir, remove_checkpoints, run_trainer, save_model

__all__ = ["METRICS_FILE", "Recipe"]

METRICS_FILE = "metrics.json"


class StopOnSignal(TrainerCallback):
    """At the end of each optimizer step: when any process has been sent SIGTERM or SIGINT
    (:class:`exoflow.signals.GracefulStop`), all save a Trainer checkpoint and stop."""

    def __init__(self, graceful: GracefulStop, trainer):
        self.graceful, self.trainer, self.stopped_at = graceful, trainer, None

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        flag = torch.tensor([1.0 if self.graceful.requested else 0.0], device=args.device)
        if args.world_size > 1:
            flag = self.trainer.accelerator.reduce(flag, reduction="sum")
        if float(flag.sum()) > 0:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = int(state.global_step)


class Recipe:
    """A training stage: ``base`` (a model folder or hub name) trained on ``train_file`` with
    ``params`` (its config section) under ``runtime``; the result goes to ``out_dir``, Trainer
    checkpoints to ``work_dir``, TensorBoard logs to ``log_dir``. ``callbacks``: extra
    ``TrainerCallback``s."""

    stage = "training"  # the stage's name in messages, metrics and the work folder's stamp
    task = "CAUSAL_LM"  # what LoRA adapts: CAUSAL_LM, or SEQ_CLS for the reward model
    trainer_class = ExoTrainer

    def __init__(self, base, train_file, out_dir, work_dir, log_dir, params: OptimParams,
                 runtime: Runtime, callbacks=None):
        self.base, self.train_file = str(base), train_file
        self.out_dir, self.work_dir, self.log_dir = Path(out_dir), Path(work_dir), log_dir
        self.params, self.rt = params, runtime
        self.extra_callbacks = list(callbacks or [])

    @property
    def run_name(self) -> str:
        return f"train_{self.stage}"

    # ---- hooks -------------------------------------------------------------------------------

    def load_data(self) -> None:
        """Read what the stage trains on (before the model, after the seed)."""
        self.train_records = read_records(self.train_file)

    def load_model(self):
        raise NotImplementedError

    def encode(self, records) -> list[dict]:
        """The training features of ``records`` (with ``self.tokenizer``)."""
        raise NotImplementedError

    def collator(self):
        raise NotImplementedError

    def group_length(self, feature: dict) -> int:
        """The length a feature is grouped by (``group_by_length``)."""
        return len(feature["input_ids"])

    def trainer_kwargs(self) -> dict:
        """Extra keyword arguments of the stage's Trainer class."""
        return {}

    def callbacks(self) -> list:
        return []

    def stamp(self) -> dict:
        """Everything that shapes the run: kept in the work folder (a folder made with another
        stamp is not resumed from) and beside the saved model (``exoflow_params.json``)."""
        return {"stage": self.stage, "base": self.base, "train": str(self.train_file),
                "params": self.params.to_dict(), "runtime": self.rt.to_dict()}

    def before_train(self, trainer) -> None:
        """On the main process, once the output folder is emptied and before training."""

    def evaluate(self, trainer) -> dict:
        """What the stage measures after training (test-set metrics), into metrics.json."""
        return {}

    def finish(self, trainer, metrics: dict) -> None:
        """Save the final model, write ``metrics.json`` and drop the resume checkpoints."""
        save_model(trainer, self.tokenizer, self.out_dir, self.stamp())
        if trainer.is_world_process_zero():
            write_json(self.out_dir / METRICS_FILE, metrics)
            remove_checkpoints(self.work_dir)

    # ---- the job -----------------------------------------------------------------------------

    def run(self) -> dict:
        """Train, evaluate, save; returns the metrics also written to ``metrics.json``."""
        setup_threads(self.rt)
        set_seed(self.rt.seed)  # a new head (the reward model's) is initialised from it
        self.load_data()
        self.args = args = make_training_args(self.params, self.rt, self.work_dir, self.log_dir)
        self.tokenizer = load_tokenizer(self.base, padding_side="right")
        model = self.load_model()
        if self.rt.lora:
            from .lora import apply_lora

            model = apply_lora(model, self.rt.lora, self.task)
            if self.rt.engine.gradient_checkpointing:
                model.enable_input_require_grads()  # the frozen embeddings' output needs grad
        train = self.encode(self.train_records)
        trainer = self.trainer_class(
            model=model, args=args, data_collator=self.collator(), train_dataset=train,
            processing_class=self.tokenizer, run_name=self.run_name,
            callbacks=[*self.callbacks(), *self.extra_callbacks],
            group_lengths=([self.group_length(f) for f in train]
                           if self.params.group_by_length else None),
            **self.trainer_kwargs())
        self.trainer = trainer
        attach_tensorboard(trainer, self.log_dir)
        if trainer.accelerator.is_main_process:
            empty_dir(self.out_dir, keep=(self.work_dir, self.log_dir))
            self.before_train(trainer)
        trainer.accelerator.wait_for_everyone()
        with GracefulStop() as graceful:
            stop = StopOnSignal(graceful, trainer)
            trainer.add_callback(stop)
            run_trainer(trainer, self.work_dir, self.stamp())
        if stop.stopped_at is not None:
            raise Stopped(
                f"{self.run_name}: stopped by {graceful.name or 'a signal to another process'} "
                f"after optimizer step {stop.stopped_at} of {trainer.state.max_steps}; it resumes "
                f"from {self.work_dir}/checkpoint-{stop.stopped_at} when run again (snakemake "
                "re-runs it)")
        metrics = {"loss_curve": loss_curve(trainer), "train_loss": mean_train_loss(trainer),
                   "global_step": int(trainer.state.global_step),
                   "step_seconds": step_seconds(trainer),
                   "resumed_from": trainer.resumed_from, "run": run_info(trainer),
                   "num_train": len(train), **self.evaluate(trainer)}
        self.finish(trainer, metrics)
        return metrics
