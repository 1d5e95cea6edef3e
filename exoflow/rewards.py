"""Scoring (prompt, response) pairs with the reward model.

``label_file`` adds ``"rewards"`` (one float per completion) to sample records
``{"prompt", "completions"}``: the data of the ``*-rw`` alignment runs (rule label_rewards).
The evaluation scores the same way (:mod:`exoflow.evaluate` calls ``score_texts``).

RM inputs follow ``batching.encode_pair(add_eos=False)``: no EOS, so the head (which reads
the last non-pad token) sees the last response token. Sequences are length-sorted
(``batching.length_sorted_batches``) and right-padded to their batch's longest.

Example::

    from exoflow.rewards import label_file
    from exoflow.config import LayoutParams
    label_file("results/tiny/models/rm", "results/tiny/data/sft_samples/train.jsonl",
               "rm_labels.jsonl", batch_size=64, layout=LayoutParams(max_len=256, max_gen_len=64))
"""

from __future__ import annotations

from .batching import encode_pair, length_sorted_batches, pad_batch
from .config import LayoutParams
from .io import RecordError, read_records, write_records
from .modeling import load_reward_model, load_tokenizer
from .runtime import default_device, inference, progress_bar


def score_texts(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int,
                max_len: int, max_gen_len: int, progress: bool = True) -> list[float]:
    """The reward of each (prompt, response) pair, in input order."""

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    pad_id = tokenizer.pad_token_id
    if getattr(model.config, "pad_token_id", None) != pad_id:
        # The head finds the last token by comparing with config.pad_token_id.
        raise ValueError(f"reward model config.pad_token_id={model.config.pad_token_id} but the "
                         f"tokenizer pads with {pad_id}; load it with "
                         "modeling.load_reward_model(..., pad_token_id=tokenizer.pad_token_id)")
    device = next(model.parameters()).device
    items = [encode_pair(tokenizer, p, r, max_len, max_gen_len, add_eos=False)
             for p, r in zip(prompts, responses)]
    rewards = [0.0] * len(items)
    with inference(model), progress_bar(len(items), "scoring", "seq", progress) as bar:
        for idx in length_sorted_batches([len(x) for x in items], batch_size):
            batch = pad_batch([items[k] for k in idx], pad_id, side="right")
            out = model(input_ids=batch["input_ids"].to(device),
                        attention_mask=batch["attention_mask"].to(device)).logits  # (B, 1)
            for k, v in zip(idx, out[:, 0].float().tolist()):
                rewards[k] = v
            bar.update(len(idx))
    return rewards


def load_scorer(rm_dir, dtype: str | None = None, device: str | None = None):
    """(model, tokenizer) of a reward-model folder, on CUDA when available."""
    tok = load_tokenizer(str(rm_dir), padding_side="right")
    model = load_reward_model(str(rm_dir), dtype=dtype, pad_token_id=tok.pad_token_id)
    return model.to(default_device(device)).eval(), tok


def _file_kind(records: list, in_file) -> str:
    """"samples" (prompt + completions) or "pref" (prompt + chosen + rejected)."""
    kinds = set()
    for n, r in enumerate(records, start=1):
        if not isinstance(r, dict) or not isinstance(r.get("prompt"), str):
            raise RecordError(f"{in_file}: record {n} has no string 'prompt'")
        if isinstance(r.get("completions"), list):
            kinds.add("samples")
        elif isinstance(r.get("chosen"), str) and isinstance(r.get("rejected"), str):
            kinds.add("pref")
        else:
            raise RecordError(f"{in_file}: record {n} has neither a 'completions' list nor "
                             "'chosen' and 'rejected' strings")
    if len(kinds) != 1:
        raise RecordError(f"{in_file}: mixes sample and preference records" if kinds
                         else f"{in_file}: no records")
    return kinds.pop()


def _score_samples(model, tok, records, batch_size, max_len, max_gen_len) -> list[dict]:
    """``records`` with ``"rewards"`` (one per completion) added."""
    flat = [(n, c) for n, r in enumerate(records) for c in r["completions"]]
    values = score_texts(model, tok, [records[n]["prompt"] for n, _ in flat],
                         [c for _, c in flat], batch_size, max_len, max_gen_len)
    out = [dict(r, rewards=[]) for r in records]
    for (n, _), v in zip(flat, values):
        out[n]["rewards"].append(v)
    return out


def label_file(rm_dir, in_file, out_file, batch_size: int, layout: LayoutParams,
               dtype: str | None = None, device: str | None = None) -> int:
    """Add ``"rewards"`` to every sample record of ``in_file`` (the RM's ``layout``, sequences
    in batches of ``batch_size``); returns the record count."""
    records = read_records(in_file)
    if _file_kind(records, in_file) != "samples":
        raise RecordError(f"{in_file}: label mode needs sample records {{prompt, completions}}")
    model, tok = load_scorer(rm_dir, dtype, device)
    return write_records(out_file, _score_samples(model, tok, records, batch_size,
                                                  layout.max_len, layout.max_gen_len))
