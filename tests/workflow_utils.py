"""Run the real Snakemake workflow in a scratch copy of the repository."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ["Snakefile", "config.yaml", "rules", "schemas", "workflow_scripts", "configs", "envs", "profiles", "report", "exoflow"]


def copy_workflow(dest: Path) -> Path:
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
