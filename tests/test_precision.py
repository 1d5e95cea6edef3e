"""Mixed precision: ``model.dtype: bf16`` on this CPU, and fp32 losses whatever the model dtype.

What is tested here: bf16 autocast (the Trainer's amp, fp32 master weights) for SFT, RM and
alignment, bf16 weights for sampling, labelling and the reference cache, all through the rules;
the summed log-probs and the alignment loss are float32 and equal an fp32 reduction of the same
bf16 logits. What only a GPU can test: fp16 (its loss scaling is CUDA's; refused on the CPU, see
tests/test_trainer.py) and DeepSpeed's bf16/fp16 engines (scripts/gpu_check.sh runs bf16 ZeRO-2).
"""

import json

import pytest
import torch

from exoflow.align import batch_loss, sequence_logps
from exoflow.align_data import AlignCollator, encode_align
from exoflow.config import AlignParams
from exoflow.modeling import build_scratch_model, load_tokenizer
from exoflow.refcache import read_ref_cache
from tests.helpers import copy_workflow, make_base, make_records, planned_jobs, snakemake


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    base = make_base(tmp_path_factory.mktemp("prec"))
    tok = load_tokenizer(base)
    recs = [{"prompt": r["prompt"], "completions": [r["chosen"], r["rejected"]], "rewards": [1.0, 0.0]}
            for r in make_records(4)]
    b = AlignCollator(tok.pad_token_id)(encode_align(tok, recs, 64, 24))
    scratch = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                   max_position_embeddings=256)
    return tok, b, build_scratch_model(scratch, tok, seed=3)


def fp32_reference(logits, batch, temp):
    """Σ over response tokens of log_softmax(fp32(logits) / τ) at the next token."""
    lp = torch.log_softmax(logits[:, :-1].float() / temp, dim=-1)
    tok = lp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (tok * batch["loss_mask"][:, 1:]).sum(-1)


@pytest.mark.parametrize("how", ["bf16 weights", "bf16 autocast"])
def test_logps_and_loss_are_fp32_whatever_the_model_dtype(batch, how):
    tok, b, model = batch
    params = AlignParams(loss="exo-rw", data="rm_labels", lr=1e-4, batch_size=4, micro_batch_size=4,
                         max_steps=1, save_every=1, temp=0.8)
    m = model.to(torch.bfloat16) if how == "bf16 weights" else model.float()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=how == "bf16 autocast"):
        logits = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        assert logits.dtype == torch.bfloat16
        lp = sequence_logps(m, b, params.temp)
        loss, _ = batch_loss(m, dict(b, ref_logps=torch.zeros(4, 2)), params)
    assert lp.dtype == torch.float32 and loss.dtype == torch.float32
    want = fp32_reference(logits, b, params.temp)
    assert lp.tolist() == pytest.approx(want.tolist(), abs=1e-4)
    # the test can tell: a log-softmax taken in bf16 is off by far more
    in_bf16 = torch.log_softmax(logits[:, :-1] / params.temp, dim=-1)
    off = (in_bf16.gather(-1, b["input_ids"][:, 1:, None]).squeeze(-1).float()
           * b["loss_mask"][:, 1:]).sum(-1)
    assert (off - want).abs().max() > 1e-2


BF16 = """
data:
  synthetic: {num_train: 48, num_test: 16}
model: {dtype: bf16}
sft: {epochs: 1, max_steps: 2, batch_size: 8, micro_batch_size: 8}
rm: {epochs: 1, max_steps: 2, batch_size: 8, micro_batch_size: 8}
sample: {max_new_tokens: 8}
align:
  only: [exo-rw_nc2]
  defaults: {max_steps: 2, save_every: 1, batch_size: 8, micro_batch_size: 8}
eval: {num_prompts: 8, val_prompts: 4, max_new_tokens: 8, checkpoints: 1}
study: {compare: []}
"""


@pytest.mark.slow  # ~80 s; the dtype unit tests above run in the default suite
@pytest.mark.e2e
def test_bf16_through_the_rules_on_the_cpu(tmp_path):
    """model.dtype: bf16 on the CPU, a few steps of every stage through snakemake: SFT, RM
    and the alignment run train under bf16 autocast (metrics say so), the reference cache is
    made under the same autocast, sampling, labelling and evaluation load bf16 weights."""
    wd = copy_workflow(tmp_path)
    (wd / "bf16.yaml").write_text(BF16)
    cfg = ["--configfile", "configs/tiny.yaml", "bf16.yaml"]
    proc = snakemake(wd, "eval_all", "-p", *cfg)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    out = wd / "results" / "tiny"
    for m in ("sft/metrics.json", "rm/metrics.json", "align/exo-rw_nc2/metrics.json"):
        run = json.loads((out / "models" / m).read_text())["run"]
        assert run["precision"] == "bf16", m
    ref = next((out / "data" / "ref_logps").glob("*.jsonl"))
    assert read_ref_cache(ref)[0]["dtype"] == "fp32+autocast-bf16"
    log = proc.stdout + proc.stderr
    ran = planned_jobs(proc)
    for rule in ("sample_sft", "label_rewards", "sample_checkpoint", "eval_checkpoint"):
        assert ran[rule] >= 1
    assert log.count("--dtype bf16") >= sum(ran[r] for r in ("sample_sft", "label_rewards",
                                                             "sample_checkpoint", "eval_checkpoint",
                                                             "eval_dataset"))
    assert (out / "summary.csv").exists()
