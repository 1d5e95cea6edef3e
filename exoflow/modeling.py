"""Model and tokenizer factory.

Two ways to get a base model, one folder format at the end:

* ``model.init`` is a Hugging Face name or a local path of a causal LM (the paper:
  ``EleutherAI/pythia-2.8b``): loaded with ``AutoModel*``/``AutoTokenizer``.
* ``model.init: scratch``: a GPT-NeoX (the Pythia architecture) built from ``model.scratch``
  with a byte-level BPE tokenizer trained on the preprocessed data.

Both end as a ``save_pretrained`` folder (safetensors + tokenizer files); nothing downstream
knows which way made it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

EOS_TOKEN = "<|endoftext|>"  # Pythia's names, so scratch and real tokenizers look alike
PAD_TOKEN = "<|padding|>"


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says what to do."""


def is_scratch(init: str) -> bool:
    return init == "scratch"


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike,
                    model_max_length: int = 2048):
    """Train a byte-level BPE tokenizer (GPT-2/Pythia style) on ``texts`` and save it.

    Byte-level means every string is encodable (no unknown token); ``EOS_TOKEN`` and
    ``PAD_TOKEN`` are special tokens with ids 0 and 1, as in Pythia.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    hf_tok.save_pretrained(str(out_dir))
    return hf_tok


def _from_pretrained(cls, name_or_path: str, **kwargs):
    try:
        return cls.from_pretrained(name_or_path, **kwargs)
    except OSError as e:  # offline hub, missing folder, missing files
        where = "local folder" if Path(name_or_path).exists() else "Hugging Face name or local path"
        raise ModelLoadError(
            f"could not load {cls.__name__} from {where} {name_or_path!r}: {e}\n"
            "If this machine has no network, give model.init as a local path of a "
            "downloaded checkpoint, or use model.init: scratch (the tiny preset)."
        ) from e


def load_tokenizer(name_or_path: str, padding_side: str = "right"):
    """A tokenizer with a pad token and the given padding side."""
    from transformers import AutoTokenizer

    tok = _from_pretrained(AutoTokenizer, str(name_or_path))
    if tok.pad_token is None:
        # Pythia ships <|padding|> in its vocabulary but does not name it the pad token.
        tok.pad_token = PAD_TOKEN if PAD_TOKEN in tok.get_vocab() else tok.eos_token
    tok.padding_side = padding_side
    return tok


def build_scratch_model(scratch: dict, tokenizer, seed: int = 0):
    """A randomly initialised GPTNeoXForCausalLM sized by ``scratch`` (seeded)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=scratch["hidden_size"],
        num_hidden_layers=scratch["num_layers"],
        num_attention_heads=scratch["num_heads"],
        intermediate_size=scratch.get("intermediate_size", 4 * scratch["hidden_size"]),
        max_position_embeddings=scratch["max_position_embeddings"],
        rotary_pct=scratch.get("rotary_pct", 0.25),
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config)


def init_base_model(init: str, out_dir: str | os.PathLike, tokenizer_dir: str | None = None,
                    scratch: dict | None = None, seed: int = 0) -> None:
    """Write the base model both SFT and RM start from to ``out_dir`` (save_pretrained)."""
    if is_scratch(init):
        if tokenizer_dir is None or scratch is None:
            raise ValueError("model.init: scratch needs a trained tokenizer and model.scratch")
        tok = load_tokenizer(tokenizer_dir)
        model = build_scratch_model(scratch, tok, seed=seed)
    else:
        tok = load_tokenizer(init)
        model = load_causal_lm(init)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))


def load_causal_lm(name_or_path: str, dtype: str | None = None, **kwargs):
    """``AutoModelForCausalLM`` from a name or folder, with a clear error when offline."""
    from transformers import AutoModelForCausalLM

    return _from_pretrained(AutoModelForCausalLM, str(name_or_path), **_dtype_kwargs(dtype), **kwargs)


def load_reward_model(name_or_path: str, dtype: str | None = None, pad_token_id: int | None = None):
    """A causal LM body with a scalar head (``AutoModelForSequenceClassification``, 1 label).

    The head reads the hidden state of the last non-pad token, wherever the padding is; the
    reward inputs carry no EOS, so that token is the last response token.
    """
    from transformers import AutoModelForSequenceClassification

    kwargs = dict(num_labels=1, **_dtype_kwargs(dtype))
    if pad_token_id is not None:
        kwargs["pad_token_id"] = pad_token_id
    return _from_pretrained(AutoModelForSequenceClassification, str(name_or_path), **kwargs)


def _dtype_kwargs(dtype: str | None) -> dict:
    if dtype in (None, "auto"):
        return {}
    import torch

    return {"dtype": {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]}


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
