"""Tokenising (prompt, response) pairs and padding them into batches.

One layout for every stage (SFT, RM, alignment, reference log-probs, sampling, KL in the
evaluation), in the model's own tokenizer conventions:

* **BOS** starts every sequence when the tokenizer's own template starts a text with it (Llama,
  Mistral, Gemma: :func:`bos_ids`), once, before the prompt; never before the response, never
  twice; GPT-NeoX, GPT-2 and Qwen add none, and neither do we;
* the **response's tokens** are those the tokenizer gives ``prompt + response`` after the
  prompt's own (:func:`response_ids`), so the ids equal the tokenizer's tokenisation of the
  whole text (the split point is the end of the prompt's tokens). Where the prompt's last token
  would merge with the response's first, the response is tokenised alone (the prompt's tokens
  are never cut). Tokenising the response alone would also differ wherever a tokenizer marks
  the start of a text (Llama-2's sentencepiece "▁" prefix), feeding the model a layout it was
  not trained on;
* the response is right-truncated to ``max_gen_len`` tokens, then the prompt is
  left-truncated (after its BOS) so that the whole fits in ``max_len`` (the end of the dialogue
  matters most);
* ``add_eos`` appends EOS after the response (SFT and log-probs: the model learns to stop;
  not for the RM, whose head reads the last response token): after the cut to
  ``max_gen_len`` (``eos_after_cut``, exoflow's), or before it as the original code does, so
  that a response of ``max_gen_len`` tokens or more has no EOS;
* padding uses the tokenizer's pad token (or EOS: :func:`exoflow.modeling.load_tokenizer`),
  never a new token; a batch is padded to its own longest sequence, never to ``max_len``;
* ``loss_mask`` is 1 on response tokens (EOS included), 0 on BOS, prompt and padding.

A sampled response is decoded as the text its tokens add to the prompt's
(:func:`decode_response`), so a leading space the tokenizer marks on the first token survives.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch


@dataclass
class Encoded:
    input_ids: list[int]
    n_prompt: int  # the first n_prompt tokens are the prompt

    def __len__(self) -> int:
        return len(self.input_ids)


_BOS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def bos_ids(tokenizer) -> list[int]:
    """``[bos_token_id]`` when the tokenizer's own template starts a text with its BOS token
    (with ``add_special_tokens``, as the model was pretrained), else ``[]``."""
    try:
        return _BOS[tokenizer]
    except (KeyError, TypeError):
        pass
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:  # no BOS token: nothing to probe
        return []
    probe = "Hello there"
    with_special = tokenizer(probe, add_special_tokens=True)["input_ids"]
    without = tokenizer(probe, add_special_tokens=False)["input_ids"]
    out = [bos] if bos is not None and with_special[:1] == [bos] and without[:1] != [bos] else []
    try:
        _BOS[tokenizer] = out
    except TypeError:
        pass
    return out


def _body(tokenizer, text: str) -> list[int]:
    """``text``'s ids without special tokens and without a BOS it spells itself."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = bos_ids(tokenizer)
    return ids[len(bos):] if bos and ids[:1] == bos else ids


def response_ids(tokenizer, prompt_ids: list[int], prompt: str, response: str) -> list[int]:
    """The response's tokens after ``prompt_ids`` (the prompt's own, no special tokens): the
    tail of the tokenisation of ``prompt + response`` when it starts with ``prompt_ids``,
    else the response tokenised alone (see the module docstring)."""
    if not response:
        return []
    joint = tokenizer(prompt + response, add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    if joint[:n] == prompt_ids:
        return joint[n:]
    return tokenizer(response, add_special_tokens=False)["input_ids"]


def encode_pair(tokenizer, prompt: str, response: str, max_len: int, max_gen_len: int,
                add_eos: bool, eos_after_cut: bool = True) -> Encoded:
    """``prompt + response (+ EOS)`` in the layout of the module docstring. ``eos_after_cut``
    (with ``add_eos``): EOS follows the response cut to ``max_gen_len`` (every sequence ends
    in EOS); False: EOS is appended before the cut, as the original code does, so a response of
    ``max_gen_len`` tokens or more keeps ``max_gen_len`` tokens and no EOS."""
    bos = bos_ids(tokenizer)
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = response_ids(tokenizer, p, prompt, response)
    if bos and p[:1] == bos:  # the prompt spells the BOS token itself: still once
        p = p[1:]
    if add_eos and not eos_after_cut:
        r = (r + [tokenizer.eos_token_id])[:max_gen_len]
    else:
        r = r[:max_gen_len]
    if add_eos and eos_after_cut:
        r = r + [tokenizer.eos_token_id]
    r = r[:max(max_len - len(bos), 0)]  # only when the response fills max_len by itself
    keep = max(max_len - len(r) - len(bos), 0)
    p = p[max(len(p) - keep, 0):] if keep else []  # the last `keep` prompt tokens
    return Encoded(bos + p + r, len(bos) + len(p))


def encode_prompt(tokenizer, prompt: str, max_len: int) -> list[int]:
    """Prompt tokens for generation (BOS first when the tokenizer starts texts with it),
    left-truncated to ``max_len``."""
    bos = bos_ids(tokenizer)
    ids = _body(tokenizer, prompt)
    keep = max(max_len - len(bos), 0)
    return bos + (ids[-keep:] if keep else [])


def decode_response(tokenizer, prompt_ids: list[int], ids: list[int]) -> str:
    """The text ``ids`` add after ``prompt_ids``: the decoded whole minus the decoded prompt
    (a tokenizer may drop the leading space of a text it decodes alone), else ``ids`` decoded
    alone when the whole does not start with the prompt's text."""
    alone = tokenizer.decode(ids, skip_special_tokens=True)
    head = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    whole = tokenizer.decode(list(prompt_ids) + list(ids), skip_special_tokens=True)
    return whole[len(head):] if whole.startswith(head) else alone


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
