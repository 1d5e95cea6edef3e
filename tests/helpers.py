"""What the tests share (the fixtures built from these are in conftest.py): tiny models and
records, parameter builders, the workflow run in a scratch copy, the scripts' CLIs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow_scripts"
HH_SAMPLE = Path(os.environ.get("EXOFLOW_HH_SAMPLE",
                                ROOT.parent / "shared" / "hh-rlhf-sample" / "harmless-base"))
WORKFLOW_FILES = ["Snakefile", "config.yaml", "rules", "schemas", "workflow_scripts", "configs",
                  "envs", "profiles", "report", "exoflow"]
# The per-step metrics of the alignment loss (exoflow.losses), in every alignment loss curve.
ALIGN_METRICS = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                 "logps/policy", "logps/ref", "logratio/mean", "probs/chosen", "kl/reverse",
                 "kl/forward"]

# ---- tiny records and models -----------------------------------------------------------------

TOPICS = ["cats", "dogs", "rain", "bread", "music", "chess", "trains", "tea", "maps", "snow",
          "bees", "ships", "paint", "clocks", "rivers", "stars"]


def make_records(n: int, offset: int = 0) -> list[dict]:
    """Pairs where the chosen answer is polite and on topic, the rejected one rude.

    Every third rejected answer is the longer one, so "shorter wins" is not trivially 0 or 1.
    """
    recs = []
    for i in range(offset, offset + n):
        t = TOPICS[i % len(TOPICS)]
        recs.append({
            "prompt": f"\n\nHuman: Tell me about {t}, please ({i}).\n\nAssistant:",
            "chosen": f" Sure! Here is a short helpful note about {t}.",
            "rejected": (f" No, I will not talk about {t} with you at all, go away now."
                         if i % 3 == 0 else " No."),
        })
    return recs


def p2r_records(n=16) -> list[dict]:
    """As data/p2r: K = 2, [chosen, rejected], rewards [1, 0]."""
    return [{"prompt": r["prompt"], "completions": [r["chosen"], r["rejected"]],
             "rewards": [1.0, 0.0]} for r in make_records(n)]


def k4_records(n=16) -> list[dict]:
    """As data/rm_labels with 4 samples: K = 4 candidates with real-valued rewards."""
    out = []
    for i, r in enumerate(make_records(n)):
        out.append({"prompt": r["prompt"],
                    "completions": [r["chosen"], r["rejected"], r["chosen"] + " Thanks.", " Maybe."],
                    "rewards": [1.0 + 0.1 * i, -1.0, 0.5 - 0.2 * (i % 3), 0.1 * (i % 5)]})
    return out


def make_base(folder: Path) -> Path:
    """Tokenizer (byte-level BPE, 300 tokens) + a random 2-layer, hidden-64 GPT-NeoX."""
    from exoflow.modeling import build_scratch_model, train_tokenizer

    texts = [r["prompt"] + r["chosen"] + r["rejected"] for r in make_records(80)]
    tok = train_tokenizer(texts, 300, folder)
    scratch = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                   max_position_embeddings=512)
    build_scratch_model(scratch, tok, seed=0).save_pretrained(str(folder))
    return folder


def make_data(folder: Path) -> tuple[Path, Path]:
    """64 training and 16 test pairs of :func:`make_records`."""
    from exoflow.io import write_records

    folder.mkdir(parents=True, exist_ok=True)
    write_records(folder / "train.jsonl", make_records(64))
    write_records(folder / "test.jsonl", make_records(16, offset=64))
    return folder / "train.jsonl", folder / "test.jsonl"


# ---- parameters --------------------------------------------------------------------------------


def tiny_stage(**kw) -> dict:
    """64 records, 8 per step (2 micro-batches of 4): 8 steps per epoch."""
    return dict(dict(lr=3e-3, epochs=2, batch_size=8, micro_batch_size=4, max_len=64,
                     max_gen_len=24), **kw)


def tiny_runtime(**kw):
    """A CPU Runtime, one thread, a Trainer checkpoint every 2 steps; ``kw`` are engine keys
    or the Runtime's own (dtype, lora, seed)."""
    from exoflow.params import EngineParams, Runtime

    own = {k: kw.pop(k) for k in ("dtype", "lora", "seed") if k in kw}
    engine = EngineParams(**dict(dict(logging_steps=1, checkpoint_every=2, num_threads=1), **kw))
    return Runtime(engine=engine, **dict(dict(seed=0), **own))


def train_stage(stage: str, data, folder: Path, **runtime):
    """SFT or the RM (``stage``) trained from ``data.base`` on ``data.train`` (the ``tiny``
    fixture's), :func:`tiny_stage` parameters, into ``folder``/out; ``(metrics, folder)``."""
    from exoflow.params import RMParams, SFTParams
    from exoflow.rm import train_rm
    from exoflow.sft import train_sft

    train, cls = {"sft": (train_sft, SFTParams), "rm": (train_rm, RMParams)}[stage]
    metrics = train(data.base, data.train, data.test, folder / "out", folder / "work",
                    folder / "logs", cls.from_dict(tiny_stage()), tiny_runtime(**runtime))
    return SimpleNamespace(metrics=metrics, dir=folder, test=data.test)


def align_params(**kw):
    """16 prompts, 4 per step in 2 micro-batches of 2: 4 steps per epoch."""
    from exoflow.params import AlignParams

    d = dict(loss="exo-rw", data="rm_labels", lr=1e-3, batch_size=4, micro_batch_size=2,
             max_steps=4, save_every=2, max_len=64, max_gen_len=24, temp=0.8)
    d.update(kw)
    return AlignParams.from_dict(d)


def make_align_data(root: Path) -> SimpleNamespace:
    """Alignment data (p2r-like K=2, rm_labels-like K=4), an "SFT" model (:func:`make_base`) and
    the K=4 reference cache of :func:`align_params`."""
    from exoflow.io import write_records
    from exoflow.refcache import precompute_ref

    root.mkdir(parents=True, exist_ok=True)
    write_records(root / "p2r.jsonl", p2r_records())
    write_records(root / "k4.jsonl", k4_records())
    sft = make_base(root / "sft")
    p = align_params()
    cache = root / "ref_k4.jsonl"
    precompute_ref(sft, root / "k4.jsonl", cache, p.temp, p.max_len, p.max_gen_len,
                   batch_size=8, progress=False)
    return SimpleNamespace(root=root, sft=sft, p2r=root / "p2r.jsonl", k4=root / "k4.jsonl",
                           cache=cache)


def run_align(data, name, params, **kw):
    """:func:`exoflow.align.train_align` on :func:`make_align_data`'s ``data`` into
    ``<root>/<name>/``; ``kw``: ``train`` (default the K=4 records), ``engine`` (keys of
    :func:`tiny_runtime`) and train_align's own. Returns (metrics, folder)."""
    from exoflow.align import train_align

    d = data.root / name
    kw.setdefault("ref_cache", data.cache)
    m = train_align(data.sft, kw.pop("train", data.k4), d / "out", d / "work", d / "logs",
                    params, tiny_runtime(**kw.pop("engine", {})), **kw)
    return m, d


class Killed(RuntimeError):
    pass


def step_callbacks(kill_at=None, seen=None) -> list:
    """A TrainerCallback recording each step into ``seen`` and raising :class:`Killed` at
    step ``kill_at``."""
    from transformers import TrainerCallback

    class Cb(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if seen is not None:
                seen.append(state.global_step)
            if state.global_step == kill_at:
                raise Killed(f"killed at step {kill_at}")

    return [Cb()]


# ---- the workflow and its scripts ----------------------------------------------------------------


def copy_workflow(dest: Path) -> Path:
    """The workflow's files in a scratch folder (results go there)."""
    for name in WORKFLOW_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def snakemake(workdir: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """``snakemake <args>`` in ``workdir``; targets must come before --configfile."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts from the 'Job stats' table of a (dry) run; {} when nothing to do."""
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    jobs, in_table = {}, False
    for line in out.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if parts[0].startswith("---"):
                continue
            jobs[parts[0]] = int(parts[1])
    return jobs


def script(name: str, *args, env=None, umask=None, check: bool | None = None,
           timeout: int = 600) -> subprocess.CompletedProcess:
    """``python workflow_scripts/<name>.py <args>`` (parameter sections, dicts, lists, None and
    booleans as JSON; everything else str), without EXOFLOW_DEBUG; ``check``: assert that it
    succeeded (True) or failed (False)."""
    words = []
    for a in args:
        if hasattr(a, "to_json"):
            a = a.to_json()
        elif isinstance(a, (dict, list, bool)) or a is None:
            a = json.dumps(a)
        words.append(str(a))
    e = {k: v for k, v in os.environ.items() if k != "EXOFLOW_DEBUG"} | (env or {})
    proc = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), *words],
                          capture_output=True, text=True, env=e, timeout=timeout,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    if check is not None:
        assert (proc.returncode == 0) == check, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def script_module(name: str):
    """workflow_scripts/<name>.py imported as a module (to call its ``main(argv)``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def one_line_error(proc, *needles) -> str:
    """The process failed with exactly one 'error: ...' line on stderr, and no traceback,
    holding every needle; returns that line."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for n in needles:
        assert str(n) in errors[0], (n, errors[0])
    return errors[0]


# ---- a pretrained checkpoint folder --------------------------------------------------------------


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
    import json

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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc, seconds: float = 120):
    import time
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline:
        assert proc.poll() is None, "the server died"
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not come up")


@contextlib.contextmanager
def served(model: str, seconds: float = 120):
    """`transformers serve <model>` on a free port of 127.0.0.1: yields the /v1 base URL."""
    import signal

    port = free_port()
    serve = Path(sys.executable).parent / "transformers"
    proc = subprocess.Popen([str(serve), "serve", model, "--host", "127.0.0.1", "--port",
                             str(port), "--device", "cpu"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_up(f"http://127.0.0.1:{port}/health", proc, seconds)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@contextlib.contextmanager
def served_judge(folder: Path, biased: bool = False):
    """A tiny random Llama with a chat template, served: yields ``{"base_url", "model"}``. Its
    answers rarely name A or B (most are invalid, a path worth testing). ``biased``: a judge
    that always answers "A", whatever it is shown (every token's embedding carries +100 on one
    hidden unit, the final norm keeps only that unit, the head maps it to "A"): with
    ``max_tokens: 1`` each prompt is a tie (each order's first reply wins), a result known by
    hand."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = make_family(folder, "llama" if biased else "llama3")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                         "{% endfor %}assistant:")
    tok.save_pretrained(folder)
    if biased:
        model = AutoModelForCausalLM.from_pretrained(folder)
        a = tok.convert_tokens_to_ids("A")
        assert a is not None and a != tok.unk_token_id
        with torch.no_grad():
            model.model.embed_tokens.weight[:, 0] = 100.0
            model.model.norm.weight.zero_()
            model.model.norm.weight[0] = 1.0
            model.lm_head.weight.zero_()
            model.lm_head.weight[a, 0] = 50.0
        model.save_pretrained(folder)
    with served(str(folder)) as base_url:
        yield {"base_url": base_url, "model": str(folder)}
