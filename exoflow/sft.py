"""Supervised fine-tuning: the causal LM learns ``prompt -> chosen + EOS``.

The loss is the token-mean negative log-likelihood of the response tokens (EOS included) over
an optimizer step's batch; prompt and padding tokens carry label -100. The token layout is
``batching.encode_pair`` (prompt left-truncated, response right-truncated to ``max_gen_len``).
``metrics.json`` holds the train loss curve and the test set's response perplexity
``exp(sum NLL / response tokens)``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F

from .batching import Encoded, encode_pair, pad_batch
from .io import read_records
from .modeling import load_causal_lm
from .recipe import Recipe
from .runtime import reduce_sums

IGNORE = -100  # the label torch's cross-entropy skips


def encode_sft(tokenizer, records, max_len: int, max_gen_len: int,
               eos_after_cut: bool = True) -> list[dict]:
    """``{"input_ids", "n_prompt"}`` per record: ``prompt + chosen + EOS``, truncated
    (:func:`exoflow.batching.encode_pair`)."""
    out = []
    for r in records:
        e = encode_pair(tokenizer, r["prompt"], r["chosen"], max_len, max_gen_len, add_eos=True,
                        eos_after_cut=eos_after_cut)
        out.append({"input_ids": e.input_ids, "n_prompt": e.n_prompt})
    return out


class SFTCollator:
    """Right-pads to the batch's longest; ``labels`` = ids on the response, -100 elsewhere."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        b = pad_batch([Encoded(f["input_ids"], f["n_prompt"]) for f in features], self.pad_id,
                      "right")
        labels = b["input_ids"].masked_fill(b["loss_mask"] == 0, IGNORE)  # (B, T)
        return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"],
                "labels": labels}


def response_nll(model, batch: dict):
    """Summed NLL of the labelled tokens and their count, for one collated batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # position t predicts token t+1
    logits = logits[:, :-1].float()  # (B, T-1, V)
    labels = batch["labels"][:, 1:]  # (B, T-1)
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                          ignore_index=IGNORE, reduction="sum")
    return nll, int((labels != IGNORE).sum())


def evaluate_sft(trainer, examples: list[dict], batch_size: int) -> dict:
    """Response NLL per token and perplexity on ``examples`` (sharded over processes)."""
    model = trainer.eval_model()
    total, count = 0.0, 0
    for batch in trainer.eval_batches(examples, batch_size):
        nll, n = response_nll(model, batch)
        total += float(nll)
        count += n
    total, count = reduce_sums(trainer, [total, count])
    mean = total / max(count, 1)
    return {"test_nll": mean, "test_perplexity": math.exp(mean), "test_tokens": int(count)}


class SFTRecipe(Recipe):
    """Fine-tune ``base`` on the chosen responses of ``train_file``; ``test_file``'s
    perplexity in metrics.json."""

    stage = "sft"

    def __init__(self, *args, test_file, **kwargs):
        super().__init__(*args, **kwargs)
        self.test_file = test_file

    def load_model(self):
        return load_causal_lm(self.base, dtype="fp32")  # mixed precision keeps fp32 masters

    def encode(self, records):
        p = self.params
        return encode_sft(self.tokenizer, records, p.max_len, p.max_gen_len, p.eos_after_cut)

    def collator(self):
        return SFTCollator(self.tokenizer.pad_token_id)

    def evaluate(self, trainer):
        test = self.encode(read_records(self.test_file))
        return {"num_test": len(test),
                **evaluate_sft(trainer, test, self.params.micro_batch_size)}


def train_sft(base, train_file, test_file, out_dir, work_dir, log_dir, params, runtime,
              callbacks=None) -> dict:
    """:class:`SFTRecipe` run; returns the metrics also written to ``<out_dir>/metrics.json``."""
    return SFTRecipe(base, train_file, out_dir, work_dir, log_dir, params, runtime,
                     callbacks=callbacks, test_file=test_file).run()
