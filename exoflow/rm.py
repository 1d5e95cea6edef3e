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

import torch.nn.functional as F

from .batching import Encoded, encode_pair, pad_batch
from .io import read_records
from .modeling import load_reward_model
from .recipe import Recipe
from .runtime import reduce_sums
from .trainer import ExoTrainer


def bt_loss(r_chosen, r_rejected):
    """Bradley-Terry loss per pair, ``-log sigmoid(r_c - r_r)`` (B,) -> (B,)."""
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


class RewardTrainer(ExoTrainer):
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


def shorter_wins_accuracy(records) -> float:
    """Accuracy of predicting that the shorter response (in characters) is chosen; ties 1/2."""
    score = sum(1.0 if len(r["chosen"]) < len(r["rejected"]) else
                0.5 if len(r["chosen"]) == len(r["rejected"]) else 0.0 for r in records)
    return score / max(len(records), 1)


def evaluate_rm(trainer, examples: list[dict], batch_size: int) -> dict:
    """Pairwise accuracy (ties 1/2) and mean margin ``r_c - r_r`` (sharded over processes)."""
    model = trainer.eval_model()
    correct, margin_sum, n = 0.0, 0.0, 0
    for batch in trainer.eval_batches(examples, batch_size):
        r = rewards(model, batch).float()
        B = r.shape[0] // 2
        m = r[:B] - r[B:]
        correct += float((m > 0).sum() + 0.5 * (m == 0).sum())
        margin_sum += float(m.sum())
        n += B
    correct, margin_sum, n = reduce_sums(trainer, [correct, margin_sum, n])
    return {"test_accuracy": correct / max(n, 1), "test_mean_margin": margin_sum / max(n, 1),
            "num_test": int(n)}


class RMRecipe(Recipe):
    """A reward model from ``base`` trained on the pairs of ``train_file``; the folder reloads
    alone with ``modeling.load_reward_model(out_dir)`` (config with ``num_labels=1`` and
    ``pad_token_id``, safetensors with the head, tokenizer). ``test_file``'s pairwise accuracy
    and the "shorter wins" baseline on it go into metrics.json."""

    stage = "rm"
    task = "SEQ_CLS"
    trainer_class = RewardTrainer

    def __init__(self, *args, test_file, **kwargs):
        super().__init__(*args, **kwargs)
        self.test_file = test_file

    def load_model(self):
        return load_reward_model(self.base, dtype="fp32", pad_token_id=self.tokenizer.pad_token_id)

    def encode(self, records):
        return encode_rm(self.tokenizer, records, self.params.max_len, self.params.max_gen_len)

    def collator(self):
        return RMCollator(self.tokenizer.pad_token_id)

    def group_length(self, feature):
        return max(len(feature["chosen"]), len(feature["rejected"]))

    def evaluate(self, trainer):
        records = read_records(self.test_file)
        return {**evaluate_rm(trainer, self.encode(records), self.params.micro_batch_size),
                "test_shorter_wins_accuracy": shorter_wins_accuracy(records)}


def train_rm(base, train_file, test_file, out_dir, work_dir, log_dir, params, runtime,
             callbacks=None) -> dict:
    """:class:`RMRecipe` run; returns the metrics also written to ``<out_dir>/metrics.json``."""
    return RMRecipe(base, train_file, out_dir, work_dir, log_dir, params, runtime,
                    callbacks=callbacks, test_file=test_file).run()
