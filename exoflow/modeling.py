"""Model and tokenizer factory.

Three ways to get a base model, one folder format at the end:

* ``model.init`` is a Hugging Face name or a local path of a causal LM (the paper:
  ``EleutherAI/pythia-2.8b``): loaded with ``AutoModel*``/``AutoTokenizer``.
* ``model.init: model.gguf``: a GGUF file (llama.cpp's format), imported once into a folder
  (:func:`import_gguf`, the rule ``import_base_model``).
* ``model.init: scratch``: a GPT-NeoX (the Pythia architecture) built from ``model.scratch``
  with a byte-level BPE tokenizer trained on the preprocessed data.

All end as a ``save_pretrained`` folder (safetensors + tokenizer files); nothing downstream
knows which way made it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .config import ScratchParams
from .errors import ExoflowError, NonFiniteError
from .hub import hub_endpoint, hub_reachable
from .io import PARAMS_FILE, atomic_folder, read_json
from .runtime import torch_dtype

EOS_TOKEN = "<|endoftext|>"  # Pythia's names, so scratch and real tokenizers look alike
PAD_TOKEN = "<|padding|>"


class ModelLoadError(ExoflowError, RuntimeError):
    """A model or tokenizer could not be loaded; the message says what to do."""


def is_scratch(init: str) -> bool:
    return init == "scratch"


def folder_of(path) -> str:
    """A model folder given as the folder or as a file in it (a rule names its config.json)."""
    p = Path(path)
    return str(p.parent if p.suffix in (".json", ".safetensors") else p)


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike,
                    model_max_length: int):
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
    with atomic_folder(out_dir, last=("tokenizer.json",)) as tmp:
        hf_tok.save_pretrained(str(tmp))
    return hf_tok


_REMAKE = ("delete the folder and run snakemake again (the rule that writes it re-makes it; "
           "for model.init, fetch the checkpoint again)")


def check_safetensors(path) -> None:
    """Refuse a ``.safetensors`` file that the safetensors library cannot open (a header that is
    not JSON, tensors that run past the end of the file: a copy or a save cut short), naming the
    file and what the library says."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        what = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{path}: not a complete safetensors file ({what}; "
                             f"{path.stat().st_size} bytes): truncated or corrupt; "
                             f"{_REMAKE}") from None


def check_model_dir(folder, what: str = "model", tokenizer: bool = True,
                    weights: bool = True) -> Path:
    """A local ``save_pretrained`` folder must hold ``config.json``, weights (``*.safetensors``,
    each checked by :func:`check_safetensors`, or ``*.bin``) and, with ``tokenizer``, tokenizer
    files; otherwise :class:`ModelLoadError` naming ``what`` and the folder."""
    d = Path(folder)
    if not d.is_dir():
        raise ModelLoadError(f"{what}: {d} is not a folder")
    missing = []
    if weights and not (d / "config.json").is_file():
        missing.append("config.json")
    st = sorted(d.glob("*.safetensors"))
    if weights and not st and not list(d.glob("*.bin")):
        missing.append("weights (*.safetensors or *.bin)")
    if tokenizer and not any((d / n).is_file() for n in TOKENIZER_FILES):
        missing.append(f"a tokenizer (one of {', '.join(TOKENIZER_FILES)})")
    if missing:
        raise ModelLoadError(f"{what}: {d} has no {'; no '.join(missing)}; {_REMAKE}")
    for f in st if weights else []:
        check_safetensors(f)
    return d


# Files one of which a tokenizer folder holds (fast tokenizer, or the config of a slow one).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


# The JSON files of a checkpoint folder, each read (and refused naming file:line) before loading.
JSON_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json")


def check_json_files(folder) -> None:
    """Every JSON file of a checkpoint folder parses (a :class:`RecordError` naming the file
    and line, and what to do, otherwise: a file cut short or hand-edited)."""
    for name in JSON_FILES:
        f = Path(folder) / name
        if f.is_file():
            read_json(f, hint=_REMAKE)


def size_mismatch(cls, folder, kwargs) -> str | None:
    """The first weight whose shape in the folder's safetensors differs from the one its
    config.json makes, as one line (None when none is found)."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig

    keep = {k: v for k, v in kwargs.items() if k in ("num_labels", "pad_token_id")}
    config = AutoConfig.from_pretrained(str(folder), **keep)
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in cls.from_config(config).state_dict().items()}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as st:
            for name in st.keys():
                shape = tuple(st.get_slice(name).get_shape())
                if name in want and want[name] != shape:
                    return (f"{f}: tensor {name!r} is {list(shape)} but {Path(folder) / 'config.json'}"
                            f" makes it {list(want[name])}: the config and the weights are of "
                            f"different models; {_REMAKE}")
    return None


def _from_pretrained(cls, name_or_path: str, **kwargs):
    local = Path(name_or_path).exists()
    if local:
        check_model_dir(name_or_path, what=cls.__name__, tokenizer=cls.__name__ == "AutoTokenizer",
                        weights=cls.__name__ != "AutoTokenizer")
        check_json_files(name_or_path)
    elif not hub_reachable():
        raise ModelLoadError(
            f"cannot reach the Hugging Face hub to download {name_or_path!r} (no network, or "
            f"{hub_endpoint()} is down); give model.init as a local checkpoint folder or .gguf "
            "file, set HF_HUB_OFFLINE=1 to read the local cache, or use model.init: scratch")
    try:
        return cls.from_pretrained(name_or_path, **kwargs)
    except Exception as e:  # offline hub, missing or corrupt files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if local and "mismatched" in str(e):
            raise ModelLoadError(size_mismatch(cls, name_or_path, kwargs) or
                                 f"{name_or_path}: config.json's sizes disagree with the weights "
                                 f"({first}); {_REMAKE}") from e
        if local:
            raise ModelLoadError(f"could not load {cls.__name__} from {name_or_path}: "
                                 f"{type(e).__name__}: {first}; {_REMAKE}") from e
        raise ModelLoadError(
            f"could not load {cls.__name__} from the Hugging Face name or local path "
            f"{name_or_path!r}: {first}. If this machine has no network, give model.init as a "
            "local path of a downloaded checkpoint, or use model.init: scratch (the tiny preset)."
        ) from e


def check_finite_weights(state_dict, where) -> None:
    """Refuse a state dict (``model.state_dict()``, or DeepSpeed's gathered one) with a NaN or
    infinite weight, naming the first such tensor."""
    import torch

    with torch.no_grad():
        for name, t in state_dict.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                if Path(str(where)).is_dir() and not (Path(str(where)) / PARAMS_FILE).exists():
                    raise NonFiniteError(  # a user's own model (model.init), not exoflow's
                        f"{where}: tensor {name!r} holds NaN or infinite values as given (not a "
                        "model exoflow trained); fix or fetch that checkpoint again (model.init)")
                raise NonFiniteError(f"{where}: tensor {name!r} holds NaN or infinite values; the "
                                     "run that wrote it diverged, delete it and re-run with a "
                                     "lower lr (or check its input data)")


def load_tokenizer(name_or_path: str, padding_side: str = "right"):
    """A tokenizer with a pad token and the given padding side."""
    from transformers import AutoTokenizer

    tok = _from_pretrained(AutoTokenizer, str(name_or_path))
    if tok.pad_token is None:
        # Pythia ships <|padding|> in its vocabulary but does not name it the pad token.
        tok.pad_token = PAD_TOKEN if PAD_TOKEN in tok.get_vocab() else tok.eos_token
    tok.padding_side = padding_side
    return tok


def build_scratch_model(scratch: ScratchParams | dict, tokenizer, seed: int = 0):
    """A randomly initialised GPTNeoXForCausalLM sized by ``scratch`` (seeded)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    if isinstance(scratch, dict):
        scratch = ScratchParams.from_dict(scratch)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=scratch.hidden_size,
        num_hidden_layers=scratch.num_layers,
        num_attention_heads=scratch.num_heads,
        intermediate_size=scratch.intermediate_size or 4 * scratch.hidden_size,
        max_position_embeddings=scratch.max_position_embeddings,
        rotary_pct=scratch.rotary_pct,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config)


def init_base_model(init: str, out_dir: str | os.PathLike, tokenizer_dir: str | None = None,
                    scratch: ScratchParams | None = None, seed: int = 0) -> None:
    """Write the base model both SFT and RM start from to ``out_dir`` (save_pretrained)."""
    if is_scratch(init):
        if tokenizer_dir is None or scratch is None:
            raise ValueError("model.init: scratch needs a trained tokenizer and model.scratch")
        tok = load_tokenizer(tokenizer_dir)
        model = build_scratch_model(scratch, tok, seed=seed)
    else:
        tok = load_tokenizer(init)
        model = load_causal_lm(init)
    with atomic_folder(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))


def import_gguf(gguf_file, out_dir) -> dict:
    """A local GGUF file (llama.cpp's format, e.g. a quantised SmolLM2) as a plain checkpoint
    folder: transformers' GGUF loader dequantises every tensor to fp32 and rebuilds the
    tokenizer from the file's metadata; the folder holds no trace of the quantisation, so every
    stage loads it as any other. The weights are the quantised ones, dequantised: a 4-bit file
    gives a model that differs from the original full-precision one by the quantisation's error.
    Returns ``{architecture, parameters, vocabulary}``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_file)
    if not path.is_file():
        raise ModelLoadError(f"model.init: {path} is not a file")
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                     dtype=torch.float32)
    except ImportError as e:
        raise ModelLoadError(f"{path}: reading GGUF needs the gguf package ({e}); pip install "
                             "gguf") from None
    except Exception as e:  # noqa: BLE001 - a file transformers cannot read
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{path}: not a GGUF file transformers can load ({type(e).__name__}: "
                             f"{first}); give a llama.cpp GGUF of a supported architecture") from None
    _gguf_special_tokens(tok, path)
    for attr in ("quantization_config",):  # dequantised: a plain fp32 checkpoint from here on
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.hf_quantizer = None
    check_finite_weights(model.state_dict(), str(path))
    with atomic_folder(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
    return {"architecture": type(model).__name__, "parameters": parameter_counts(model)["total_params"],
            "vocabulary": len(tok)}


def gguf_metadata(path: Path):
    """``get(key)`` over the metadata of the GGUF file at ``path`` (the value, or None where the
    key is absent); None when the gguf package is missing."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    fields = GGUFReader(str(path)).fields

    def get(key: str):
        f = fields.get(key)
        return None if f is None else f.contents()

    return get


def _gguf_special_tokens(tok, path: Path) -> None:
    """The BOS/EOS a text starts/ends with, as the GGUF file says (``tokenizer.ggml.add_bos_token``,
    ``add_eos_token``): transformers 5.17 (measured; 5.24 keeps it) drops the file's
    add_bos_token for byte-level (``gpt2``) vocabularies, so a Llama-3-style model would
    silently train and sample without the BOS it was pretrained with. Set where the loaded tokenizer disagrees, checked after;
    ModelLoadError where it cannot be made to agree."""
    get = gguf_metadata(path)
    if get is None:
        return

    def flag(key):
        v = get(key)
        return None if v is None else bool(v)

    probe = "Hello there"
    for key, attr, token_id, at in (("tokenizer.ggml.add_bos_token", "add_bos_token",
                                     tok.bos_token_id, 0),
                                    ("tokenizer.ggml.add_eos_token", "add_eos_token",
                                     tok.eos_token_id, -1)):
        want = flag(key)
        if want is None or token_id is None:
            continue

        def adds(token_id=token_id, at=at):
            ids = tok(probe, add_special_tokens=True)["input_ids"]
            return bool(ids) and ids[at] == token_id and \
                tok(probe, add_special_tokens=False)["input_ids"][at:][:1] != [token_id]

        if adds() != want:
            setattr(tok, attr, want)
        if adds() != want:
            raise ModelLoadError(f"{path}: its metadata says {key} = {want}, but the tokenizer "
                                 f"transformers builds from it does {'not ' if want else ''}add "
                                 "that token and cannot be made to; import the model with "
                                 "another transformers version")


def load_causal_lm(name_or_path: str, dtype: str | None = None, **kwargs):
    """``AutoModelForCausalLM`` from a name or folder, with a clear error when offline."""
    from transformers import AutoModelForCausalLM

    model = _from_pretrained(AutoModelForCausalLM, str(name_or_path), **_dtype_kwargs(dtype),
                             **kwargs)
    check_finite_weights(model.state_dict(), name_or_path)
    return model


def load_reward_model(name_or_path: str, dtype: str | None = None, pad_token_id: int | None = None):
    """A causal LM body with a scalar head (``AutoModelForSequenceClassification``, 1 label).

    The head reads the hidden state of the last non-pad token, wherever the padding is; the
    reward inputs carry no EOS, so that token is the last response token.
    """
    from transformers import AutoModelForSequenceClassification

    kwargs = dict(num_labels=1, **_dtype_kwargs(dtype))
    if pad_token_id is not None:
        kwargs["pad_token_id"] = pad_token_id
    model = _from_pretrained(AutoModelForSequenceClassification, str(name_or_path), **kwargs)
    check_finite_weights(model.state_dict(), name_or_path)
    return model


def _dtype_kwargs(dtype: str | None) -> dict:
    return {} if dtype in (None, "auto") else {"dtype": torch_dtype(dtype)}


def parameter_counts(model) -> dict:
    """``{"trainable_params", "total_params"}`` (LoRA adapters included in the total)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": int(trainable), "total_params": int(total)}
