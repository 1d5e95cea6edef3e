"""Seeded random checkpoints of each model family with a tokenizer in its conventions, and a GGUF writer."""

from __future__ import annotations

import json
from pathlib import Path

from .records import make_records


def make_pretrained(folder: Path, pad: str = "unset", seed: int = 0) -> Path:
    """A local Hugging Face checkpoint folder the way a user brings Pythia: a seeded GPT-NeoX
    (embedding rows rounded up to a multiple of 64 beyond the tokenizer, as Pythia's 50,304
    for 50,277 tokens) and a byte-level BPE tokenizer trained on synthetic HH dialogues.

    ``pad="unset"``: ``<|padding|>`` is in the vocabulary but not named the pad token and the
    model config has no pad id (Pythia's files); ``pad="eos"``: no padding token at all, the
    pad token is EOS (many other checkpoints)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

    from exoflow.synthetic import generate_raw_pairs

    specials = ["<|endoftext|>", "<|padding|>"] if pad == "unset" else ["<|endoftext|>"]
    texts = [r["chosen"] + r["rejected"] for r in generate_raw_pairs(400, seed=1)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=1000, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                  pad_token="<|endoftext|>" if pad == "eos" else None,
                                  clean_up_tokenization_spaces=False)
    assert (tok.pad_token is None) == (pad == "unset")
    config = GPTNeoXConfig(
        vocab_size=-(-len(tok) // 64) * 64, hidden_size=64, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=256, max_position_embeddings=512,
        rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    GPTNeoXForCausalLM(config).save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    return folder


# ---- tiny random checkpoint folders of every model family ------------------------------------

# family -> (model config class, how its tokenizer works). "bos": the tokenizer's template adds
# a BOS token; "pad": the pad token it names (None: none, the loader falls back to EOS);
# "sentencepiece": a Llama-2-style tokenizer (a "▁" prepended to every text, spaces as "▁"),
# "gemma": spaces as "▁" without the prefix; otherwise byte-level BPE (GPT-2's).
FAMILIES = {
    "gpt_neox": dict(kind="bytelevel", bos=None, eos="<|endoftext|>", pad="<|padding|>"),
    "llama": dict(kind="sentencepiece", bos="<s>", eos="</s>", pad=None, unk="<unk>"),
    "llama3": dict(kind="bytelevel", bos="<|begin_of_text|>", eos="<|end_of_text|>", pad=None),
    "mistral": dict(kind="sentencepiece", bos="<s>", eos="</s>", pad=None, unk="<unk>"),
    "qwen2": dict(kind="bytelevel", bos=None, eos="<|im_end|>", pad="<|endoftext|>"),
    "qwen3": dict(kind="bytelevel", bos=None, eos="<|im_end|>", pad="<|endoftext|>"),
    "gemma2": dict(kind="gemma", bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>"),
    "gemma3": dict(kind="gemma", bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>"),
    "gpt2": dict(kind="bytelevel", bos=None, eos="<|endoftext|>", pad=None),
    "phi3": dict(kind="sentencepiece", bos="<s>", eos="<|endoftext|>", pad="<|endoftext|>",
                 unk="<unk>", add_bos=False),
}


def family_texts(n: int = 300) -> list[str]:
    """Synthetic HH dialogues (prompts and both responses) to train a tiny tokenizer on."""
    from exoflow.synthetic import generate_raw_pairs

    return [r["chosen"] + r["rejected"] for r in generate_raw_pairs(n, seed=3)] + [
        r["prompt"] + r["chosen"] + r["rejected"] for r in make_records(80)]


def family_tokenizer(family: str, vocab_size: int = 600):
    """A fast tokenizer in ``family``'s convention (:data:`FAMILIES`), trained on
    :func:`family_texts`."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    spec = FAMILIES[family]
    names = [t for t in (spec.get("pad"), spec["eos"], spec.get("bos"), spec.get("unk")) if t]
    specials = list(dict.fromkeys(["<pad>", "<eos>", "<bos>", "<unk>"] if spec["kind"] == "gemma"
                                  else names))
    if spec["kind"] == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok = Tokenizer(models.BPE(unk_token=spec["unk"]))
        steps = [normalizers.Replace(" ", "▁")]
        if spec["kind"] == "sentencepiece":  # Llama-2's converted tokenizer.json (legacy)
            steps = [normalizers.Prepend("▁"), *steps]
        tok.normalizer = normalizers.Sequence(steps)
        # sentencepiece's pieces never cross a word boundary: split before every "▁"
        tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
        dec = [decoders.Replace("▁", " "), decoders.Fuse()]
        if spec["kind"] == "sentencepiece":
            dec.append(decoders.Strip(" ", 1, 0))
        tok.decoder = decoders.Sequence(dec)
        alphabet = sorted(set("".join(family_texts()).replace(" ", "▁")) | {"▁"})
    tok.train_from_iterator(family_texts(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
        show_progress=False))
    bos = spec.get("bos")
    if bos and spec.get("add_bos", True):
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=spec["eos"], pad_token=spec.get("pad"),
        unk_token=spec.get("unk") or spec["eos"], clean_up_tokenization_spaces=False)


def family_config(family: str, tok, positions: int = 512):
    """A tiny config of ``family`` (2 layers) for the vocabulary of ``tok``."""
    import transformers as T

    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions)
    if family == "gpt_neox":
        return T.GPTNeoXConfig(**ids, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, max_position_embeddings=positions,
                               rotary_pct=0.25, tie_word_embeddings=False)
    if family in ("llama", "llama3"):
        return T.LlamaConfig(**ids, **small, tie_word_embeddings=family == "llama3")
    if family == "mistral":
        return T.MistralConfig(**ids, **small, sliding_window=16)
    if family == "qwen2":
        return T.Qwen2Config(**ids, **small, tie_word_embeddings=True)
    if family == "qwen3":
        return T.Qwen3Config(**ids, **small, head_dim=8, tie_word_embeddings=True)
    if family == "gemma2":
        return T.Gemma2Config(**ids, **small, head_dim=8, sliding_window=16,
                              query_pre_attn_scalar=8)
    if family == "gemma3":
        return T.Gemma3TextConfig(**ids, **small, head_dim=8, sliding_window=16,
                                  query_pre_attn_scalar=8)
    if family == "gpt2":
        return T.GPT2Config(**ids, n_embd=32, n_layer=2, n_head=4, n_positions=positions,
                            n_inner=64)
    if family == "phi3":
        return T.Phi3Config(**ids, **small)
    raise KeyError(family)


def make_family(folder: Path, family: str, seed: int = 0, positions: int = 512) -> Path:
    """A seeded random causal LM of ``family`` with a tokenizer in its convention, saved as a
    checkpoint folder (``save_pretrained``), as a user brings one."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = family_tokenizer(family)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(family_config(family, tok, positions))
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def write_llama_gguf(folder: Path, path: Path) -> Path:
    """The Llama checkpoint ``folder`` (byte-level BPE tokenizer) written as an F32 GGUF file
    in llama.cpp's layout (its tensor names, the query and key rows permuted as llama.cpp's
    converter does, the tokenizer's vocabulary and merges in the metadata): a GGUF whose exact
    contents are known, to check what the import reads back."""

    import gguf
    from safetensors.numpy import load_file

    cfg = json.loads((folder / "config.json").read_text())
    tok = json.loads((folder / "tokenizer.json").read_text())
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def permute(w, heads):  # llama.cpp's rotary layout of q and k rows
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2) \
            .reshape(w.shape)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_freq_base(float(cfg.get("rope_theta") or
                                    cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)))
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = {t["content"] for t in tok["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([3 if t in specials else 1 for t, _ in vocab])
    merges = tok["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for key in ("bos", "eos", "pad"):
        if cfg.get(f"{key}_token_id") is not None:
            getattr(writer, f"add_{key}_token_id")(cfg[f"{key}_token_id"])
    writer.add_add_bos_token(True)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg["num_hidden_layers"])
    for name, w in load_file(str(folder / "model.safetensors")).items():
        if name.endswith("q_proj.weight"):
            w = permute(w, n_head)
        elif name.endswith("k_proj.weight"):
            w = permute(w, n_kv)
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# ---- a real OpenAI-compatible server -----------------------------------------------------------
