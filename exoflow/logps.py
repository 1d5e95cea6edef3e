"""Summed response log-probabilities of a causal LM, at a sampling temperature.

This is the ℓ building block of the EXO/DPO losses (:mod:`exoflow.losses`): for the
policy and for the frozen reference, Σ over response tokens of log softmax(z / τ) at the
token, prompt and padding masked out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .align_data import pad_candidates
from .batching import encode_pair, length_sorted_batches
from .runtime import inference

__all__ = ["model_pair_stats", "model_response_kl", "model_response_logps", "response_logps",
           "text_logps", "text_pair_stats"]

# Positions processed per chunk are capped so that a chunk of fp32 logits stays under
# about this many elements (2**26 floats = 256 MiB).
_CHUNK_ELEMENTS = 1 << 26


def response_logps(
    logits: Tensor,
    input_ids: Tensor,
    loss_mask: Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> Tensor:
    """Σ_t mask[t] · log softmax(logits[t−1] / τ)[input_ids[t]] for each sequence.

    ``logits`` (B, T, V) from a causal LM run over ``input_ids`` (B, T), so ``logits[:, t]``
    predicts ``input_ids[:, t+1]`` (the shift by one happens here). ``loss_mask`` (B, T)
    (bool, int or float) is 1 on response tokens — the tokens being predicted — and 0 on
    prompt and padding, left or right; position 0 has no logits predicting it, so
    ``loss_mask[:, 0]`` must be 0. Token ids under a 0 mask are never read (pad ids such
    as −100 are fine). Returns (B,) in float32 (float64 if the logits are), differentiable
    w.r.t. ``logits``; a row with no response tokens gives 0.

    Memory: only the masked positions are evaluated, in chunks of ``chunk_size`` positions
    (default: ~256 MiB of fp32 per chunk), as the gathered logit minus the logsumexp — no
    full (B, T, V) log-softmax (or fp32 copy of the logits) is built. Under autograd the
    per-chunk fp32 inputs are kept for the backward pass, as any log-softmax would.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}")
    b, t, v = logits.shape
    if input_ids.shape != (b, t) or loss_mask.shape != (b, t):
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and loss_mask {tuple(loss_mask.shape)} must "
            f"both be (B, T) = {(b, t)} to match logits {tuple(logits.shape)}"
        )
    _check_mask_and_temperature(loss_mask, temperature)
    dtype = torch.promote_types(logits.dtype, torch.float32)
    out = torch.zeros(b, dtype=dtype, device=logits.device)
    if t < 2:
        return out + 0.0 * logits.sum()  # keep the graph connected

    mask = loss_mask[:, 1:]
    rows, cols = (mask != 0).nonzero(as_tuple=True)  # cols index logits[:, :-1]
    if rows.numel() == 0:
        return out + 0.0 * logits.sum()
    targets = input_ids[:, 1:][rows, cols]
    return _sum_token_logps(lambda r: logits[rows[r], cols[r]], rows, targets,
                            mask[rows, cols], v, temperature, chunk_size, out)


def _check_mask_and_temperature(loss_mask: Tensor, temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if loss_mask.shape[1] > 0 and bool((loss_mask[:, 0] != 0).any()):
        raise ValueError(
            "loss_mask[:, 0] is nonzero: the first token has no preceding logits to predict it; "
            "loss_mask marks predicted (response) tokens in input_ids, never position 0"
        )


def _sum_token_logps(get_logits, rows, targets, weights, v, temperature, chunk_size, out):
    """Σ per row of weights · log softmax(z / τ)[target] over the scored positions, where
    ``get_logits(slice)`` gives the (n, V) logits of those positions, evaluated in chunks."""
    targets = targets.long()
    if bool(((targets < 0) | (targets >= v)).any()):
        raise ValueError(f"a response token id is outside the vocabulary [0, {v})")
    weights = weights.to(out.dtype)
    step = chunk_size or max(1, _CHUNK_ELEMENTS // max(v, 1))
    inv_tau = 1.0 / float(temperature)
    pieces = []
    for start in range(0, rows.numel(), step):
        sl = slice(start, start + step)
        z = get_logits(sl).to(out.dtype)  # (n, V): only the positions that are scored
        if inv_tau != 1.0:
            z = z * inv_tau
        tok = z.gather(-1, targets[sl, None]).squeeze(-1)
        pieces.append(tok - torch.logsumexp(z, dim=-1))
    per_token = torch.cat(pieces) * weights
    return out.index_add(0, rows, per_token)


def _bool_logits_to_keep() -> bool:
    """Whether this transformers' models take a boolean (B, T) ``logits_to_keep``: those that
    slice with ``modeling_utils.slice_logits_to_keep`` (transformers 5.21 on). Before, they
    index ``hidden_states[:, logits_to_keep, :]``, which a 2-D mask breaks; then every
    position is projected (the same log-probs, more work)."""
    from transformers import modeling_utils

    return hasattr(modeling_utils, "slice_logits_to_keep")


BOOL_LOGITS_TO_KEEP = _bool_logits_to_keep()


def model_response_logps(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    loss_mask: Tensor,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> Tensor:
    """:func:`response_logps` of ``model`` run over ``input_ids``, with the LM head applied
    only at the positions that predict a response token.

    The model is called through its own ``forward`` (so DDP / DeepSpeed wrappers see the call)
    with ``logits_to_keep`` = a boolean (B, T) mask of those positions: transformers then
    projects only the kept hidden states onto the vocabulary, returning (n, V) logits. Prompts
    are most of the tokens of HH dialogues, so this skips most of the LM head's work (and its
    (B, T, V) logits). Models whose forward ignores a boolean ``logits_to_keep`` (they return
    (B, T, V) logits), and every model of a transformers before 5.21
    (:data:`BOOL_LOGITS_TO_KEEP`), are handled by :func:`response_logps`, with the same result.
    """
    b, t = input_ids.shape
    if loss_mask.shape != (b, t):
        raise ValueError(f"loss_mask {tuple(loss_mask.shape)} must be (B, T) = {(b, t)}")
    _check_mask_and_temperature(loss_mask, temperature)
    keep = torch.zeros(b, t, dtype=torch.bool, device=input_ids.device)
    keep[:, :-1] = loss_mask[:, 1:] != 0  # logits at t-1 predict token t
    n = int(keep.sum())
    if n == 0:  # nothing to score: still run the model so that the graph exists
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                       logits_to_keep=1).logits
        return torch.zeros(b, dtype=torch.promote_types(logits.dtype, torch.float32),
                           device=logits.device) + 0.0 * logits.sum()
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                   logits_to_keep=keep if BOOL_LOGITS_TO_KEEP else 0).logits
    if logits.dim() == 3:  # the model projected every position
        return response_logps(logits, input_ids, loss_mask, temperature, chunk_size)
    if logits.shape[0] != n:
        raise RuntimeError(f"the model returned {tuple(logits.shape)} logits for {n} kept positions")
    rows, cols = keep.nonzero(as_tuple=True)  # row-major, the order of hidden_states[keep]
    targets = input_ids[:, 1:][rows, cols]
    weights = loss_mask[:, 1:][rows, cols]
    out = torch.zeros(b, dtype=torch.promote_types(logits.dtype, torch.float32),
                      device=logits.device)
    return _sum_token_logps(lambda r: logits[r], rows, targets, weights, logits.shape[-1],
                            temperature, chunk_size, out)


def _kept(loss_mask: Tensor, temperature: float):
    """(keep (B, T) bool: positions whose logits predict a response token, rows, cols,
    weights) of a batch."""
    b, t = loss_mask.shape
    _check_mask_and_temperature(loss_mask, temperature)
    keep = torch.zeros(b, t, dtype=torch.bool, device=loss_mask.device)
    keep[:, :-1] = loss_mask[:, 1:] != 0
    rows, cols = keep.nonzero(as_tuple=True)  # row-major, the order of hidden_states[keep]
    return keep, rows, cols, loss_mask[:, 1:][rows, cols].float()


def _kept_logits(model, input_ids, attention_mask, keep) -> Tensor:
    z = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
              logits_to_keep=keep if BOOL_LOGITS_TO_KEEP else 0).logits
    return (z[keep] if z.dim() == 3 else z).float()  # (n, V)


def _kl_rows(zp: Tensor, zq: Tensor, temperature: float) -> Tensor:
    lp = torch.log_softmax(zp / temperature, dim=-1)
    lq = torch.log_softmax(zq / temperature, dim=-1)
    return (lp.exp() * (lp - lq)).sum(-1).clamp_min(0.0)  # clamp: rounding just below 0


def model_response_kl(policy, reference, input_ids: Tensor, attention_mask: Tensor,
                      loss_mask: Tensor, temperature: float = 1.0) -> Tensor:
    """Σ_t mask[t] · KL(softmax(z_π[t−1] / τ) ‖ softmax(z_ref[t−1] / τ)) for each sequence (B,):
    the exact per-token KL over the whole vocabulary at every position that predicts a response
    token, summed along the sequence.

    Along samples drawn from π at temperature τ, its mean is an unbiased estimate of the
    sequence-level KL(π_τ ‖ π_ref,τ) (the chain rule), non-negative by construction and of much
    lower variance than the mean of log π(y) − log π_ref(y). Both models run with the LM head
    applied only at the kept positions (as :func:`model_response_logps`); fp32 whatever the
    models' dtype.
    """
    return model_pair_stats(policy, reference, input_ids, attention_mask, loss_mask,
                            temperature)[2]


def model_pair_stats(policy, reference, input_ids: Tensor, attention_mask: Tensor,
                     loss_mask: Tensor, kl_temperature: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """``(log π(y|x), log π_ref(y|x), exact KL)`` per sequence (B,) from one forward of each
    model: the summed log-probs at temperature 1 (the original scripts' KL estimator is their
    difference) and :func:`model_response_kl` at ``kl_temperature`` (the sampling one)."""
    if loss_mask.shape != input_ids.shape:
        raise ValueError(f"loss_mask {tuple(loss_mask.shape)} must be (B, T) = "
                         f"{tuple(input_ids.shape)}")
    keep, rows, cols, weights = _kept(loss_mask, kl_temperature)
    b = input_ids.shape[0]
    outs = [torch.zeros(b, dtype=torch.float32, device=input_ids.device) for _ in range(3)]
    if rows.numel() == 0:
        return tuple(outs)
    zp = _kept_logits(policy, input_ids, attention_mask, keep)
    zq = _kept_logits(reference, input_ids, attention_mask, keep)
    targets = input_ids[:, 1:][rows, cols]
    for out, z in zip(outs[:2], (zp, zq)):
        tok = torch.log_softmax(z, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
        out.index_add_(0, rows, tok * weights)
    outs[2].index_add_(0, rows, _kl_rows(zp, zq, kl_temperature) * weights)
    return tuple(outs)


def _over_texts(tokenizer, prompts, completions, max_len, max_gen_len, batch_size, device,
                score, progress, desc, n_out: int = 1, eos_after_cut: bool = True):
    """``score(batch)``, a (S,) tensor or a tuple of ``n_out`` of them, over every (prompt,
    completion) in the alignment layout, in length-sorted right-padded batches; each result
    has the shape of ``completions`` (a tuple of them when ``n_out`` > 1)."""
    from tqdm.auto import tqdm

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completion lists")
    flat = [(i, c) for i, cs in enumerate(completions) for c in cs]
    items = [encode_pair(tokenizer, prompts[i], c, max_len, max_gen_len, add_eos=True,
                         eos_after_cut=eos_after_cut) for i, c in flat]
    values = [[0.0] * len(items) for _ in range(n_out)]
    for idx in tqdm(length_sorted_batches([len(x) for x in items], batch_size),
                    desc=desc, unit="batch", disable=not progress):
        b = {k: v.to(device) for k, v in
             pad_candidates([items[k] for k in idx], tokenizer.pad_token_id).items()}
        got = score(b)
        for vals, t in zip(values, got if n_out > 1 else (got,)):
            for k, v in zip(idx, t.tolist()):
                vals[k] = float(v)
    outs = []
    for vals in values:
        out: list[list[float]] = [[] for _ in completions]
        for (i, _), v in zip(flat, vals):
            out[i].append(v)
        outs.append(out)
    return tuple(outs) if n_out > 1 else outs[0]


def text_logps(model, tokenizer, prompts: list[str], completions: list[list[str]],
               max_len: int, max_gen_len: int, batch_size: int, temperature: float = 1.0,
               amp_dtype=None, progress: bool = False,
               desc: str = "log-probs", eos_after_cut: bool = True) -> list[list[float]]:
    """Summed log-prob of each completion given its prompt, EOS included: the one function
    behind the reference log-prob cache (:mod:`exoflow.refcache`, at the alignment τ) and the
    log-ratio KL estimate of the evaluation (:mod:`exoflow.evaluate`, at τ = 1).

    The alignment token layout (:func:`exoflow.align_data.encode_align`: response
    right-truncated to ``max_gen_len``, prompt left-truncated to fit ``max_len``); only response
    tokens and the EOS count, at ``log softmax(logits / temperature)``
    (:func:`model_response_logps`). Sequences are length-sorted into right-padded batches of
    ``batch_size``, run under ``inference_mode`` on the model's device (``amp_dtype``, e.g.
    ``torch.bfloat16``, autocasts the forward as mixed-precision training does). The result
    has the shape of ``completions``; the model's train/eval mode is restored.
    """
    device = next(model.parameters()).device
    with inference(model, amp_dtype=amp_dtype):
        return _over_texts(
            tokenizer, prompts, completions, max_len, max_gen_len, batch_size, device,
            lambda b: model_response_logps(model, b["input_ids"], b["attention_mask"],
                                           b["loss_mask"], temperature), progress, desc,
            eos_after_cut=eos_after_cut)


def text_pair_stats(policy, reference, tokenizer, prompts: list[str],
                    completions: list[list[str]], max_len: int, max_gen_len: int,
                    batch_size: int, kl_temperature: float = 1.0, progress: bool = False
                    ) -> tuple[list[list[float]], list[list[float]], list[list[float]]]:
    """:func:`model_pair_stats` of each completion given its prompt (the layout of
    :func:`text_logps`): (log π, log π_ref, exact KL at ``kl_temperature``), each shaped like
    ``completions``."""
    device = next(policy.parameters()).device
    with inference(policy, reference):
        return _over_texts(
            tokenizer, prompts, completions, max_len, max_gen_len, batch_size, device,
            lambda b: model_pair_stats(policy, reference, b["input_ids"], b["attention_mask"],
                                       b["loss_mask"], kl_temperature),
            progress, "log-probs and exact KL", n_out=3)
