"""The reward model: a causal-LM body with a scalar head, trained with the Bradley-Terry loss.

The reward of ``prompt + response`` is the head's output at the last response token (no EOS
appended; ``batching.encode_pair(add_eos=False)``), as the paper's RM (exact-optimization
``src/rm_stage``). ``modeling.load_reward_model`` gives ``AutoModelForSequenceClassification``
with one label, whose head reads the last token that is not ``pad_token_id``. Batches here are
always right-padded. (GPT-NeoX finds that token from ``input_ids != pad_token_id`` and so
reads the right token with left padding too; ``tests/test_rm.py`` checks both.)

Loss for a pair: ``-log sigmoid(r_chosen - r_rejected)``, averaged over the pairs of a batch.
``metrics.json``: test-set pairwise accuracy and mean margin, the "shorter response wins"
baseline accuracy on the same pairs, and the train loss curve.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from . import engine as eng
from .batching import Encoded, encode_pair, pad_batch
from .engine import EngineParams, StageParams, eval_model, eval_shard, reduce_sums, trainer_class
from .io import read_records
from .modeling import load_reward_model, load_tokenizer


@dataclass
class RMParams(StageParams):
    """Config ``rm``: see :class:`exoflow.engine.StageParams`; batch sizes count pairs."""


def bt_loss(r_chosen, r_rejected):
    """Bradley-Terry loss per pair, ``-log sigmoid(r_c - r_r)`` (B,) -> (B,)."""
    import torch.nn.functional as F

    return -F.logsigmoid(r_chosen.float() - r_rejected.float())


def encode_rm(tokenizer, records, max_len: int, max_gen_len: int) -> list[dict]:
    """``{"chosen", "rejected"}`` token ids per record (prompt + response, no EOS)."""
    out = []
    for r in records:
        c = encode_pair(tokenizer, r["prompt"], r["chosen"], max_len, max_gen_len, add_eos=False)
        j = encode_pair(tokenizer, r["prompt"], r["rejected"], max_len, max_gen_len, add_eos=False)
        out.append({"chosen": c.input_ids, "rejected": j.input_ids})
    return out


class RMCollator:
    """B pairs -> one right-padded batch of 2B sequences: the chosen, then the rejected."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        seqs = [f["chosen"] for f in features] + [f["rejected"] for f in features]
        b = pad_batch([Encoded(s, 0) for s in seqs], self.pad_id, "right")
        return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}  # (2B, T)


def rewards(model, batch: dict):
    """The scalar reward of each sequence of a collated batch, (N,)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.logits.squeeze(-1)


@functools.cache
def _trainer_class():
    class RewardTrainer(trainer_class()):
        """Trainer with the pairwise BT loss; logs ``rewards/accuracies`` and ``rewards/margins``."""

        loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides it by accumulation

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._sums = [0.0, 0.0, 0]  # correct, margin, pairs since the last log

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            r = rewards(model, inputs)  # (2B,)
            B = r.shape[0] // 2
            margin = (r[:B] - r[B:]).detach().float()
            loss = bt_loss(r[:B], r[B:]).mean()
            if model.training:
                self._sums[0] += float((margin > 0).sum())
                self._sums[1] += float(margin.sum())
                self._sums[2] += B
            return (loss, {"rewards": r}) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            if "loss" in logs and self._sums[2]:
                c, m, n = self._sums
                logs["rewards/accuracies"] = c / n
                logs["rewards/margins"] = m / n
                self._sums = [0.0, 0.0, 0]
            return super().log(logs, *args, **kwargs)

    return RewardTrainer


def shorter_wins_accuracy(records) -> float:
    """Accuracy of predicting that the shorter response (in characters) is chosen; ties 1/2."""
    score = sum(1.0 if len(r["chosen"]) < len(r["rejected"]) else
                0.5 if len(r["chosen"]) == len(r["rejected"]) else 0.0 for r in records)
    return score / max(len(records), 1)


def evaluate_rm(trainer, examples: list[dict], batch_size: int) -> dict:
    """Pairwise accuracy (ties 1/2) and mean margin ``r_c - r_r`` (sharded over processes)."""
    import torch

    model = eval_model(trainer)
    collate = trainer.data_collator
    idx = eval_shard(trainer, len(examples))
    correct, margin_sum, n = 0.0, 0.0, 0
    with torch.no_grad(), trainer.accelerator.autocast():
        for i in range(0, len(idx), batch_size):
            batch = collate([examples[j] for j in idx[i:i + batch_size]])
            batch = {k: v.to(trainer.args.device) for k, v in batch.items()}
            r = rewards(model, batch).float()
            B = r.shape[0] // 2
            m = r[:B] - r[B:]
            correct += float((m > 0).sum() + 0.5 * (m == 0).sum())
            margin_sum += float(m.sum())
            n += B
    correct, margin_sum, n = reduce_sums(trainer, [correct, margin_sum, n])
    return {"test_accuracy": correct / max(n, 1), "test_mean_margin": margin_sum / max(n, 1),
            "num_test": int(n)}


def train_rm(base: str, train_file, test_file, out_dir, work_dir, log_dir,
             params: RMParams, engine: EngineParams, callbacks=None) -> dict:
    """Train a reward model from ``base`` on the pairs of ``train_file``; save to ``out_dir``.

    The folder reloads alone with ``modeling.load_reward_model(out_dir)`` (config with
    ``num_labels=1`` and ``pad_token_id``, safetensors with the head, tokenizer).
    ``callbacks``: extra ``TrainerCallback``s. Returns the metrics also written to
    ``<out_dir>/metrics.json``.
    """

    from transformers import set_seed

    eng.setup_threads(engine)
    set_seed(engine.seed)  # the scalar head is freshly initialised
    args = eng.make_training_args(params, engine, work_dir, log_dir)
    tok = load_tokenizer(base, padding_side="right")
    model = load_reward_model(base, dtype="fp32", pad_token_id=tok.pad_token_id)
    model = eng.prepare_model(model, engine, "SEQ_CLS")
    train_records, test_records = read_records(train_file), read_records(test_file)
    train = encode_rm(tok, train_records, params.max_len, params.max_gen_len)
    test = encode_rm(tok, test_records, params.max_len, params.max_gen_len)
    trainer = _trainer_class()(model=model, args=args, data_collator=RMCollator(tok.pad_token_id),
                               train_dataset=train, processing_class=tok, callbacks=callbacks,
                               run_name="train_rm",
                               group_lengths=([max(len(f["chosen"]), len(f["rejected"])) for f in train]
                                              if params.group_by_length else None))
    eng.attach_tensorboard(trainer, log_dir)
    if trainer.accelerator.is_main_process:
        eng.empty_dir(out_dir, keep=(work_dir, log_dir))
    run_params = {"stage": "rm", "base": str(base), "train": str(train_file),
                  "rm": params.to_dict(), "engine": engine.to_dict()}
    out = eng.run_trainer(trainer, work_dir, run_params)

    metrics = {
        **eng.train_metrics(trainer, out, len(train)),
        **evaluate_rm(trainer, test, params.micro_batch_size),
        "test_shorter_wins_accuracy": shorter_wins_accuracy(test_records),
    }
    eng.finish(trainer, tok, out_dir, work_dir, run_params, metrics)
    return metrics
