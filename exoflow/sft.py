"""Supervised fine-tuning: the causal LM learns ``prompt -> chosen + EOS``.

The loss is the token-mean negative log-likelihood of the response tokens (EOS included) over
an optimizer step's batch; prompt and padding tokens carry label -100. The token layout is
``batching.encode_pair`` (prompt left-truncated, response right-truncated to ``max_gen_len``).
``metrics.json`` holds the train loss curve and the test set's response perplexity
``exp(sum NLL / response tokens)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import engine as eng
from .batching import Encoded, encode_pair, pad_batch
from .engine import EngineParams, StageParams, eval_model, eval_shard, reduce_sums
from .io import read_records
from .modeling import load_causal_lm, load_tokenizer

IGNORE = -100  # the label torch's cross-entropy skips


@dataclass
class SFTParams(StageParams):
    """Config ``sft``: see :class:`exoflow.engine.StageParams` for every field."""


def encode_sft(tokenizer, records, max_len: int, max_gen_len: int) -> list[dict]:
    """``{"input_ids", "n_prompt"}`` per record: ``prompt + chosen + EOS``, truncated."""
    out = []
    for r in records:
        e = encode_pair(tokenizer, r["prompt"], r["chosen"], max_len, max_gen_len, add_eos=True)
        out.append({"input_ids": e.input_ids, "n_prompt": e.n_prompt})
    return out


class SFTCollator:
    """Right-pads to the batch's longest; ``labels`` = ids on the response, -100 elsewhere."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        b = pad_batch([Encoded(f["input_ids"], f["n_prompt"]) for f in features], self.pad_id, "right")
        labels = b["input_ids"].masked_fill(b["loss_mask"] == 0, IGNORE)  # (B, T)
        return {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"], "labels": labels}


def response_nll(model, batch: dict):
    """Summed NLL of the labelled tokens and their count, for one collated batch."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # position t predicts token t+1
    logits = logits[:, :-1].float()  # (B, T-1, V)
    labels = batch["labels"][:, 1:]  # (B, T-1)
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                          ignore_index=IGNORE, reduction="sum")
    return nll, int((labels != IGNORE).sum())


def evaluate_sft(trainer, examples: list[dict], batch_size: int) -> dict:
    """Response NLL per token and perplexity on ``examples`` (sharded over processes)."""
    import math

    import torch

    model = eval_model(trainer)
    collate = trainer.data_collator
    idx = eval_shard(trainer, len(examples))
    total, count = 0.0, 0
    with torch.no_grad(), trainer.accelerator.autocast():
        for i in range(0, len(idx), batch_size):
            batch = collate([examples[j] for j in idx[i:i + batch_size]])
            batch = {k: v.to(trainer.args.device) for k, v in batch.items()}
            nll, n = response_nll(model, batch)
            total += float(nll)
            count += n
    total, count = reduce_sums(trainer, [total, count])
    mean = total / max(count, 1)
    return {"test_nll": mean, "test_perplexity": math.exp(mean), "test_tokens": int(count)}


def train_sft(base: str, train_file, test_file, out_dir, work_dir, log_dir,
              params: SFTParams, engine: EngineParams, callbacks=None) -> dict:
    """Fine-tune ``base`` on the chosen responses of ``train_file``; save to ``out_dir``.

    Checkpoints go to ``work_dir`` (resumed from if present), TensorBoard logs to ``log_dir``.
    ``callbacks``: extra ``TrainerCallback``s. Returns the metrics also written to
    ``<out_dir>/metrics.json``.
    """

    from transformers import set_seed

    eng.setup_threads(engine)
    set_seed(engine.seed)
    args = eng.make_training_args(params, engine, work_dir, log_dir)
    tok = load_tokenizer(base, padding_side="right")
    model = load_causal_lm(base, dtype="fp32")  # mixed precision keeps fp32 master weights
    model = eng.prepare_model(model, engine, "CAUSAL_LM")
    train = encode_sft(tok, read_records(train_file), params.max_len, params.max_gen_len)
    test = encode_sft(tok, read_records(test_file), params.max_len, params.max_gen_len)
    trainer = eng.trainer_class()(model=model, args=args, data_collator=SFTCollator(tok.pad_token_id),
                                  train_dataset=train, processing_class=tok, callbacks=callbacks,
                                  run_name="train_sft",
                                  group_lengths=([len(f["input_ids"]) for f in train]
                                                 if params.group_by_length else None))
    eng.attach_tensorboard(trainer, log_dir)
    if trainer.accelerator.is_main_process:
        eng.empty_dir(out_dir, keep=(work_dir, log_dir))
    run_params = {"stage": "sft", "base": str(base), "train": str(train_file),
                  "sft": params.to_dict(), "engine": engine.to_dict()}
    out = eng.run_trainer(trainer, work_dir, run_params)

    metrics = {
        **eng.train_metrics(trainer, out, len(train)),
        "num_test": len(test),
        **evaluate_sft(trainer, test, params.micro_batch_size),
    }
    eng.finish(trainer, tok, out_dir, work_dir, run_params, metrics)
    return metrics
