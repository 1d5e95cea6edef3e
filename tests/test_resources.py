"""What a job asks a cluster for (exoflow.resources): the model's size read from its files,
memory and time by hand for the paper's Pythia-2.8B, above the peaks measured here, and
computed again by Snakemake once the model exists."""

import math
import re
from pathlib import Path

import yaml

from exoflow.config.check import check_config
from exoflow.estimate import load_config
from exoflow.resources import Work, job_work, mem_mb, model_size, runtime_min
from tests.helpers import copy_workflow, make_family, snakemake

ROOT = Path(__file__).resolve().parents[1]
PYTHIA_2_8B = 2_775_208_960  # parameters (embed_in and embed_out untied), vocabulary 50,304


def test_model_size_is_the_weights_parameter_count(tmp_path):
    from transformers import AutoModelForCausalLM

    for family in ("llama", "gemma3"):
        folder = make_family(tmp_path / family, family)
        model = AutoModelForCausalLM.from_pretrained(folder)
        params, vocab = model_size(folder)
        # tied embeddings are stored once, and counted once
        assert params == sum(p.numel() for p in model.parameters()), family
        assert vocab == model.config.get_text_config().vocab_size
    assert model_size(tmp_path / "not-there") == (0, 0)  # a dry run, before the model exists


def _paper(stage, run=None, n=43_835):
    plan = check_config(yaml.safe_load(open(ROOT / "config.yaml")))
    return job_work(plan, stage, run, PYTHIA_2_8B, 50_304, n, threads=32)


def test_paper_requests_by_hand():
    # SFT: 1 epoch of ceil(43,835 / 128) = 343 steps x 128 x 512 tokens, on 4 GPUs
    w = _paper("sft")
    assert (w.kind, w.gpus, w.tokens) == ("train", 4, 343 * 128 * 512)
    assert mem_mb(w) == math.ceil(4 * (3e9 + 8 * PYTHIA_2_8B) / 1e6) == 100_807
    flops = 6 * PYTHIA_2_8B * 343 * 128 * 512
    assert runtime_min(w) == math.ceil(3 * flops / (4 * 100e12) / 60) == 47
    assert runtime_min(w, attempt=2) == 94 and mem_mb(w, attempt=2) == math.ceil(1.5 * 100_807)
    # alignment: 175 steps x 128 prompts x 2 candidates x 512 tokens, the reference cached
    w = _paper("align", "exo-rw_nc2")
    assert (w.tokens, w.reference) == (175 * 128 * 2 * 512, False)
    # sampling: 2 x 200 tokens for each of 43,835 prompts, decoding at a tenth of the rate
    w = _paper("sample_sft")
    assert (w.kind, w.gpus, w.tokens) == ("sample", 1, 43_835 * 2 * 200)
    assert runtime_min(w) == math.ceil(3 * 20 * PYTHIA_2_8B * w.tokens / 100e12 / 60)
    assert mem_mb(w) == math.ceil((3e9 + 4 * PYTHIA_2_8B) / 1e6)
    # a dry run (no model, no data yet): the interpreter and the floor
    plan = check_config(yaml.safe_load(open(ROOT / "config.yaml")))
    w = job_work(plan, "sft", None, 0, 0, 0, threads=32)
    assert (mem_mb(w), runtime_min(w)) == (12_000, 20)


def test_cpu_requests_cover_the_peaks_measured_here():
    """Peaks (Snakemake's max_rss) measured on this machine: a Gemma 3 270M SFT job 6.9 GB
    (micro-batch 8 x 192 tokens, 262,144 tokens); the tiny preset's jobs 0.4-1.06 GB."""
    gemma = Work("train", params=268_098_176, tokens=1, logits=8 * 192 * 262_144)
    assert mem_mb(gemma) >= 6_900
    assert mem_mb(gemma) == math.ceil((1.5e9 + 16 * 268_098_176 + 12 * 8 * 192 * 262_144) / 1e6)
    tiny_align = Work("train", params=1_089_024, tokens=1, logits=32 * 2 * 256 * 1_000)
    assert mem_mb(tiny_align) >= 1_056
    assert mem_mb(Work("score", params=1_089_024, tokens=1, models=2)) >= 628


def test_snakemake_sizes_a_job_from_the_model_it_is_given(tmp_path):
    """The dry run cannot know the model; the job that trains on it asks for what its size
    needs: Snakemake evaluates the request again once the base model exists."""
    wd = copy_workflow(tmp_path)
    (wd / "q.yaml").write_text("data:\n  synthetic: {num_train: 200, num_test: 32}\n"
                               "sft: {max_steps: 2}\n")
    cfg = ["--configfile", "configs/tiny.yaml", "q.yaml"]
    proc = snakemake(wd, "results/tiny/models/sft/config.json", *cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    block = proc.stderr[proc.stderr.index("rule train_sft:"):]
    asked = int(re.search(r"mem_mb=(\d+)", block).group(1))
    params, vocab = model_size(wd / "results" / "tiny" / "models" / "base")
    assert params > 1_000_000 and vocab > 500
    plan = check_config(load_config([ROOT / "configs" / "tiny.yaml"], ROOT))
    assert asked > 1_500
    c = plan.cfg.sft
    want = Work("train", params=params, tokens=0, logits=c.micro_batch_size * c.max_len * vocab)
    assert asked == mem_mb(want)
