"""Tokenising (prompt, response) pairs and padding them into batches.

One layout for every stage (SFT, RM, alignment, reference log-probs, KL in evaluation):

* prompt and response are tokenised separately (no special tokens) and concatenated, so a
  response's tokens are the same whatever prompt precedes it;
* the response is right-truncated to ``max_gen_len`` tokens, then the prompt is
  left-truncated so that the whole fits in ``max_len`` (the end of the dialogue matters most);
* ``add_eos`` appends EOS after the response (SFT and log-probs: the model learns to stop;
  not for the RM, whose head reads the last response token);
* a batch is padded to its own longest sequence, never to ``max_len``;
* ``loss_mask`` is 1 on response tokens (EOS included), 0 on prompt and padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Encoded:
    input_ids: list[int]
    n_prompt: int  # the first n_prompt tokens are the prompt

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_pair(tokenizer, prompt: str, response: str, max_len: int, max_gen_len: int,
                add_eos: bool) -> Encoded:
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"][:max_gen_len]
    if add_eos:
        r = r + [tokenizer.eos_token_id]
    keep = max(max_len - len(r), 0)
    p = p[max(len(p) - keep, 0):] if keep else []  # the last `keep` prompt tokens
    return Encoded(p + r, len(p))


def encode_prompt(tokenizer, prompt: str, max_len: int) -> list[int]:
    """Prompt tokens for generation, left-truncated to ``max_len``."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ids[-max_len:] if max_len else ids


def pad_batch(items: list[Encoded], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad to the longest item: ``input_ids``, ``attention_mask``, ``loss_mask`` (B, T)."""
    T = max(len(x) for x in items)
    B = len(items)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    loss = torch.zeros((B, T), dtype=torch.long)
    for i, x in enumerate(items):
        n = len(x)
        start = 0 if side == "right" else T - n
        ids[i, start:start + n] = torch.tensor(x.input_ids, dtype=torch.long)
        attn[i, start:start + n] = 1
        loss[i, start + x.n_prompt:start + n] = 1
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss}


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), for inference.

    Callers restore the original order from the indices.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
