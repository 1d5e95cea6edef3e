"""Sampling completions from a causal LM.

``sample_completions`` draws ``num_return`` completions per prompt with batched
``generate`` (left padding, KV cache, position ids from the attention mask), prompts
grouped by length (``batching.length_sorted_batches``) and the input order restored.

A completion ends at EOS, after ``max_new_tokens``, or (``stop_at_turn``, exoflow's default) at
the start of a new dialogue turn (``\\n\\nHuman:`` or ``\\n\\nAssistant:``, which HH-trained
models like to write), where the turn marker and anything after it are cut (``cut_at_turn``);
with ``stop_at_turn=False`` the next turns are kept, as the original's text-generation pipeline
keeps them. A batch stops early once every row has ended.

Reproducibility. Completion ``j`` of prompt ``i`` (``i`` its position in the prompt list)
draws its tokens by inverse-CDF sampling from its own random stream, seeded from
``(seed, i, j)``. So the samples of a prompt do not depend on the batch size, on which
prompts share its batch, on ``num_prompts`` or on the other prompts in the file: the same
seed gives bit-identical samples on the same hardware and software, and different seeds
give different samples. The only coupling left is floating-point: a padded batch can
change a logit in its last bits, which flips a token only when the stream's uniform falls
within ~1e-7 of a CDF boundary (not observed in the tests, where batch sizes 1 and 3 give
identical samples). ``temperature=0`` is greedy decoding.

Example (a model folder written by ``save_pretrained``)::

    from exoflow.modeling import load_causal_lm, load_tokenizer
    from exoflow.sampling import sample_completions
    tok = load_tokenizer("results/tiny/models/sft", padding_side="left")
    lm = load_causal_lm("results/tiny/models/sft").eval()
    outs = sample_completions(lm, tok, ["\\n\\nHuman: Hi!\\n\\nAssistant:"], num_return=2,
                              temperature=0.8, top_k=0, max_new_tokens=48, max_len=256,
                              batch_size=64, seed=42)
    # outs == [[" Hello ...", " Hi ..."]]
"""

from __future__ import annotations

import hashlib
import sys
import time

import torch
from transformers import LogitsProcessor, StoppingCriteria

from .batching import Encoded, decode_response, encode_prompt, length_sorted_batches, pad_batch
from .config import GenerationParams
from .io import RecordError, iter_records, write_records
from .modeling import load_causal_lm, load_tokenizer
from .runtime import default_device, inference, progress_bar

TURN_MARKERS = ("\n\nHuman:", "\n\nAssistant:")


def cut_at_turn(text: str, markers: tuple[str, ...] = TURN_MARKERS) -> str:
    """``text`` up to the first dialogue-turn marker (the marker itself is not kept).

    >>> cut_at_turn(" Sure.\\n\\nHuman: more")
    ' Sure.'
    """
    cut = min((k for k in (text.find(m) for m in markers) if k >= 0), default=len(text))
    return text[:cut]


def stream_seed(seed: int, prompt_index: int, return_index: int) -> int:
    """The 63-bit seed of the random stream of completion ``return_index`` of a prompt."""
    digest = hashlib.blake2b(f"exoflow-sample:{seed}:{prompt_index}:{return_index}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _uniforms(seed: int, keys: list[tuple[int, int]], steps: int) -> torch.Tensor:
    """(rows, steps) float64 uniforms in [0, 1), one stream per (prompt, return) key."""
    gen = torch.Generator()
    out = torch.empty((len(keys), steps), dtype=torch.float64)
    for r, (i, j) in enumerate(keys):
        gen.manual_seed(stream_seed(seed, i, j))
        torch.rand(steps, generator=gen, dtype=torch.float64, out=out[r])
    return out


class InverseCDFSampler(LogitsProcessor):
    """A LogitsProcessor that turns greedy ``generate`` into seeded per-row sampling.

    It draws token = F^-1(u) from softmax(logits / temperature) (top-k masked) with the
    row's own uniform ``u`` for this step (``uniforms`` (rows, steps); ``prompt_width``: the
    padded prompts' length, where step 0 starts), and returns scores that are 0 at that token
    and -inf elsewhere, so generate's argmax picks it.
    """

    def __init__(self, uniforms: torch.Tensor, prompt_width: int, temperature: float,
                 top_k: int):
        self.uniforms, self.prompt_width = uniforms, prompt_width
        self.temperature, self.top_k = temperature, top_k

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_width
        logits = scores.float() / self.temperature                           # (B, V)
        if 0 < self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        cdf = torch.softmax(logits, dim=-1).double().cumsum(-1)               # (B, V)
        x = self.uniforms[:, step:step + 1] * cdf[:, -1:]                     # (B, 1)
        token = torch.searchsorted(cdf, x, right=True).clamp_(max=cdf.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, token, 0.0)


def _turn_end_tokens(tokenizer, vocab_size: int, markers: tuple[str, ...] = TURN_MARKERS):
    """(V,) bool: the tokens whose text contains a marker's last character (":")."""
    last_chars = {m[-1] for m in markers}
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    ends = torch.zeros(max(vocab_size, len(texts)), dtype=torch.bool)
    ends[[i for i, t in enumerate(texts) if any(c in t for c in last_chars)]] = True
    return ends


class TurnStop(StoppingCriteria):
    """A StoppingCriteria: a row is done once its generated text (after ``prompt_width``)
    contains a turn marker.

    Cheap: only rows whose newest token can end a marker (``ends``, :func:`_turn_end_tokens`)
    are decoded, and only their last few generated tokens (a marker of n bytes spans at most n
    tokens, as every ordinary token is at least one byte).
    """

    def __init__(self, tokenizer, ends: torch.Tensor, prompt_width: int,
                 markers: tuple[str, ...] = TURN_MARKERS):
        self.tokenizer, self.ends, self.prompt_width, self.markers = (tokenizer, ends,
                                                                      prompt_width, markers)
        self.window = max(len(m.encode()) for m in markers)

    def __call__(self, input_ids, scores, **kwargs):
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        gen = input_ids[:, self.prompt_width:]
        rows = self.ends[gen[:, -1]].nonzero().flatten().tolist()
        if rows:
            tails = self.tokenizer.batch_decode(gen[rows, -self.window:].tolist())
            hit = [r for r, t in zip(rows, tails) if any(m in t for m in self.markers)]
            if hit:
                done[hit] = True
        return done


def _as_prompt(ids: list[int]) -> Encoded:
    return Encoded(ids, len(ids))


def _strip_generated(ids: list[int], eos_id: int) -> list[int]:
    return ids[:ids.index(eos_id)] if eos_id in ids else ids


def prefill_groups(lengths: list[int], slack: float = 1.25) -> list[list[int]]:
    """Indices of ``lengths`` (longest first) in groups that a padded forward computes with at
    most ``slack`` x their real positions: a batch of length-sorted prompts is still padded to
    its longest, which a few long prompts make wasteful; each group is padded to its own."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        g = groups[-1] if groups else None
        if g and lengths[g[0]] * (len(g) + 1) <= slack * (sum(lengths[j] for j in g) + lengths[i]):
            g.append(i)
        else:
            groups.append([i])
    return groups


def _cache_kwarg() -> str:
    """``generate``'s keyword for a prefilled KV cache: ``cache`` from transformers 5.24 on,
    ``past_key_values`` before (5.24 renamed it; the old name still works there, with a
    deprecation warning)."""
    import transformers
    from packaging.version import Version

    return "cache" if Version(transformers.__version__).release >= (5, 24) else "past_key_values"


CACHE_KWARG = _cache_kwarg()


def _prefix_forward(model, seqs: list[list[int]], pad_id: int, device):
    """The KV cache of ``seqs`` left-padded to their longest (position ids follow the mask, as
    in ``generate``; the LM head skipped: ``logits_to_keep=1``)."""
    b = pad_batch([_as_prompt(x) for x in seqs], pad_id, side="left")
    ids, mask = b["input_ids"].to(device), b["attention_mask"].to(device)
    pos = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                 logits_to_keep=1).past_key_values


def _shared_prompt_cache(model, prompts: list[list[int]], width: int, repeats: int, pad_id: int,
                         device, max_new_tokens: int, static: bool = True):
    """The KV cache of a batch of distinct prompts left-padded to ``width`` tokens, without
    their last token (``generate`` then feeds it and decodes), each prompt computed once and
    copied to its ``repeats`` rows.

    The cache is a preallocated ``StaticCache`` with room for ``max_new_tokens`` more: a static
    cache writes each step's keys and values in place, where a ``DynamicCache`` copies the
    whole cache with ``torch.cat`` every step. The prompts are run in :func:`prefill_groups`
    (padding bounded per group) and each one's keys and values are placed at its left-padded
    positions; the padding positions stay zero, masked by the attention mask as before.
    ``static=False`` (benchmarks' ablation): one padded forward, generate's growing cache."""
    from transformers import StaticCache

    seqs = [x[:-1] for x in prompts]
    if not static:
        prefix = _prefix_forward(model, seqs, pad_id, device)
        prefix.batch_repeat_interleave(repeats)
        return prefix
    keys: list = []
    values: list = []
    for group in prefill_groups([len(x) for x in seqs]):
        group = [i for i in group if seqs[i]]  # a one-token prompt has nothing to prefill
        if not group:
            continue
        part = _prefix_forward(model, [seqs[i] for i in group], pad_id, device)
        for li, layer in enumerate(part.layers):
            if li == len(keys):
                shape = (len(seqs), layer.keys.shape[1], width - 1)
                keys.append(layer.keys.new_zeros(*shape, layer.keys.shape[-1]))
                values.append(layer.values.new_zeros(*shape, layer.values.shape[-1]))
            w = layer.keys.shape[2]
            for r, i in enumerate(group):
                n = len(seqs[i])
                keys[li][i, :, width - 1 - n:] = layer.keys[r, :, w - n:]
                values[li][i, :, width - 1 - n:] = layer.values[r, :, w - n:]
    cache = StaticCache(config=model.config, max_cache_len=width + max_new_tokens)
    for layer, k, v in zip(cache.layers, keys, values):
        layer.update(k.repeat_interleave(repeats, 0), v.repeat_interleave(repeats, 0))
    return cache


def sample_completions(model, tokenizer, prompts: list[str], num_return: int,
                       temperature: float, top_k: int, max_new_tokens: int, max_len: int,
                       batch_size: int, seed: int, progress: bool = True,
                       stop_at_turn: bool = True, stream_ids: list[int] | None = None,
                       share_prompt_cache: bool = True,
                       static_cache: bool = True) -> list[list[str]]:
    """``num_return`` completions for each prompt, in prompt order (see the module docstring).

    ``batch_size`` counts prompts; a ``generate`` call holds ``batch_size * num_return`` rows.
    Prompts are left-truncated to ``max_len`` tokens (an empty prompt becomes one EOS, the
    Pythia BOS). ``temperature=0`` is greedy (all ``num_return`` completions then agree).
    ``stop_at_turn``: end a completion at the next dialogue turn (see the module docstring).
    ``stream_ids``: the number of each prompt's random stream (default: its position), so that
    a subset of a file draws the samples its prompts draw in the whole file.
    ``share_prompt_cache``: run each prompt through the model once and copy its KV cache to
    its ``num_return`` rows of a preallocated static cache, instead of once per row into
    ``generate``'s growing one (same samples; less prompt compute, no cache copy per step).
    ``static_cache=False`` keeps the shared prompt forward but the growing cache.
    """
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    device = next(model.parameters()).device
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    vocab_size = model.get_output_embeddings().weight.shape[0]
    ends = _turn_end_tokens(tokenizer, vocab_size).to(device)
    encoded = [encode_prompt(tokenizer, p, max_len) or [eos_id] for p in prompts]
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
        eos_token_id=eos_id, pad_token_id=pad_id,
    )
    results: list[list[str]] = [[] for _ in prompts]
    new_tokens, t0 = 0, time.perf_counter()
    with inference(model), progress_bar(len(prompts), "sampling", "prompt", progress) as bar:
        for idx in length_sorted_batches([len(e) for e in encoded], batch_size):
            ids = stream_ids if stream_ids is not None else range(len(prompts))
            keys = [(ids[i], j) for i in idx for j in range(num_return)]
            uniq = pad_batch([_as_prompt(encoded[i]) for i in idx], pad_id, side="left")
            batch = {k: v.repeat_interleave(num_return, 0) for k, v in uniq.items()}
            width = batch["input_ids"].shape[1]
            processors = LogitsProcessorList()
            if temperature > 0:
                u = _uniforms(seed, keys, max_new_tokens).to(device)
                processors.append(InverseCDFSampler(u, width, temperature, top_k))
            stop = StoppingCriteriaList([TurnStop(tokenizer, ends, width)] if stop_at_turn
                                        else [])
            extra = {}
            if share_prompt_cache and num_return > 1 and width > 1:
                extra[CACHE_KWARG] = _shared_prompt_cache(
                    model, [encoded[i] for i in idx], width, num_return, pad_id, device,
                    max_new_tokens, static_cache)
            out = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                generation_config=gen_config, logits_processor=processors,
                stopping_criteria=stop, **extra,
            )
            for (i, _), row in zip([(i, j) for i in idx for j in range(num_return)],
                                   out[:, width:].tolist()):
                ids = _strip_generated(row, eos_id)
                new_tokens += len(ids)
                text = decode_response(tokenizer, encoded[i], ids)
                results[i].append(cut_at_turn(text) if stop_at_turn else text)
            bar.update(len(idx))
            bar.set_postfix(new_tok_s=f"{new_tokens / (time.perf_counter() - t0):.0f}")
    return results


def read_prompts(in_file, num_prompts: int | None = None) -> list[str]:
    """The ``prompt`` of every record of ``in_file`` (the first ``num_prompts`` if given)."""
    prompts = []
    for line, rec in iter_records(in_file):
        if num_prompts is not None and len(prompts) >= num_prompts:
            break
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str):
            raise RecordError(f"{in_file}:{line}: record has no string 'prompt'")
        prompts.append(rec["prompt"])
    return prompts


def subset_indices(n: int, k: int | None, seed: int) -> list[int]:
    """``k`` of ``range(n)`` drawn by ``seed``, in ascending order (all of them when ``k`` is
    None or at least ``n``): the same seed gives the same subset, whatever else changes."""
    import random

    if k is None or k >= n:
        return list(range(n))
    return sorted(random.Random(f"exoflow-subset-{seed}").sample(range(n), k))


def sample_file(model_dir, in_file, out_file, params: GenerationParams, seed: int,
                num_prompts: int | None = None, dtype: str | None = None,
                device: str | None = None, subset: int | None = None) -> int:
    """Sample ``params.num_return`` completions for each prompt of ``in_file`` (the first
    ``num_prompts``, when given).

    Writes ``{"prompt", "completions": [...]}`` records to ``out_file`` in input order and
    returns how many. ``device`` defaults to CUDA when available.
    """
    prompts = read_prompts(in_file, num_prompts)
    ids = subset_indices(len(prompts), subset, seed)
    prompts = [prompts[i] for i in ids]
    tok = load_tokenizer(str(model_dir), padding_side="left")
    model = load_causal_lm(str(model_dir), dtype=dtype).to(default_device(device)).eval()
    t0 = time.perf_counter()
    outs = sample_completions(model, tok, prompts, num_return=params.num_return,
                              temperature=params.temperature, top_k=params.top_k,
                              max_new_tokens=params.max_new_tokens,
                              max_len=params.max_prompt_len, batch_size=params.batch_size,
                              seed=seed, stop_at_turn=params.stop_at_turn, stream_ids=ids)
    dt = time.perf_counter() - t0
    print(f"sampled {len(prompts)} prompts x {params.num_return} in {dt:.1f}s "
          f"({len(prompts) / max(dt, 1e-9):.1f} prompts/s)", file=sys.stderr)
    return write_records(out_file, ({"prompt": p, "completions": c} for p, c in zip(prompts, outs)))
