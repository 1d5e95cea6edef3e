"""The training loop every stage shares (exoflow.trainer, exoflow.workdir, exoflow.recipe):
params, batch semantics, resuming, DeepSpeed on the CPU, length-grouped batches, saving."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exoflow.config import EngineParams, Runtime, SFTParams
from exoflow.errors import ParamsError
from exoflow.io import read_json, read_records, write_json
from exoflow.runtime import gradient_accumulation_steps
from exoflow.trainer import make_training_args
from exoflow.workdir import PARAMS_FILE, last_checkpoint, run_trainer
from tests.helpers import ROOT, Killed, step_callbacks, tiny_runtime, tiny_stage

# --- params -----------------------------------------------------------------------------------


def test_from_dict_refuses_unknown_and_missing_keys():
    with pytest.raises(ParamsError, match=r"engine.gpu: unknown key \(did you mean 'gpus'\?\)"):
        EngineParams.from_dict({"gpu": 1})
    with pytest.raises(ParamsError, match=r"sft.learning_rate: unknown key \(did you mean 'lr'"):
        SFTParams.from_dict(tiny_stage(learning_rate=1e-3))
    with pytest.raises(ParamsError, match=r"sft: missing key\(s\) lr"):
        SFTParams.from_dict({k: v for k, v in tiny_stage().items() if k != "lr"})
    rt = Runtime.from_dict({"engine": {"deepspeed": None, "gpus": 0}, "dtype": "bf16", "seed": 3})
    assert (rt.dtype, rt.seed, rt.engine.checkpoint_every) == ("bf16", 3, 200)


def test_shipped_config_sections_parse():
    import yaml

    for path in (ROOT / "config.yaml", ROOT / "configs" / "tiny.yaml"):
        cfg = yaml.safe_load(path.read_text())
        eng = dict(cfg["engine"])
        if eng["deepspeed"]:
            eng["deepspeed"] = str(ROOT / eng["deepspeed"])
        EngineParams.from_dict(eng)
        SFTParams.from_dict(cfg["sft"])
        SFTParams.from_dict(cfg["rm"])


def test_bad_values_are_refused_with_what_to_set():
    with pytest.raises(ParamsError, match="max_gen_len < max_len"):
        SFTParams.from_dict(tiny_stage(max_gen_len=64))
    with pytest.raises(ParamsError, match="dtype"):
        Runtime(dtype="float16")
    with pytest.raises(ParamsError, match="no such file"):
        EngineParams(deepspeed="nowhere/zero2.json")


def test_zero3_is_refused(tmp_path):
    cfg = tmp_path / "z3.json"
    cfg.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(ParamsError, match="ZeRO stage 3 is not supported"):
        EngineParams(deepspeed=str(cfg))


def test_gradient_accumulation_steps():
    assert gradient_accumulation_steps(64, 8, 8) == 1
    assert gradient_accumulation_steps(64, 8, 1) == 8
    assert gradient_accumulation_steps(64, 4, 4) == 4
    with pytest.raises(ParamsError, match=r"batch_size 64 is not a multiple of micro_batch_size 8 "
                       r"x 3 training process\(es\)"):
        gradient_accumulation_steps(64, 8, 3)
    with pytest.raises(ParamsError, match=r"batch_size 10 is not a multiple of micro_batch_size 4 "
                       r"x 1 "):
        gradient_accumulation_steps(10, 4, 1)


def test_training_args(tmp_path):
    p = SFTParams.from_dict(tiny_stage(warmup_ratio=0.1))
    args = make_training_args(p, tiny_runtime(dtype="bf16"), tmp_path / "work", tmp_path / "logs",
                              n_procs=2)
    assert args.gradient_accumulation_steps == 1 and args.per_device_train_batch_size == 4
    assert args.bf16 and not args.fp16 and args.use_cpu  # bf16 autocast on the CPU too
    assert not make_training_args(p, tiny_runtime(), tmp_path / "w2", n_procs=2).bf16
    with pytest.raises(ParamsError, match="fp16 needs a GPU"):
        make_training_args(p, tiny_runtime(dtype="fp16"), tmp_path / "w3", n_procs=2)
    assert args.output_dir == str(tmp_path / "work")
    assert (args.save_steps, args.save_total_limit, args.logging_steps) == (2, 1, 1)
    assert args.report_to == ["tensorboard"] and args.remove_unused_columns is False
    assert (args.lr_scheduler_type, args.adam_beta2, args.max_grad_norm) == ("cosine", 0.95, 1.0)
    assert args.warmup_steps == 0.1 and args.max_steps == -1 and args.seed == 0


# --- checkpoints and resuming -----------------------------------------------------------------


def test_last_checkpoint_skips_incomplete(tmp_path):
    assert last_checkpoint(tmp_path / "missing") is None
    for step, complete in [(2, True), (10, True), (9, True), (12, False)]:
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # 10 > 9, 12 cut short


class _StubAccelerator:
    is_main_process = True

    def wait_for_everyone(self):
        pass


class _StubTrainer:
    accelerator = _StubAccelerator()

    def train(self, resume_from_checkpoint=None):
        self.resume_arg = resume_from_checkpoint


def test_changed_params_start_over(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    write_json(tmp_path / PARAMS_FILE, {"lr": 1})
    t = _StubTrainer()
    run_trainer(t, tmp_path, {"lr": 1})
    assert t.resume_arg == str(tmp_path / "checkpoint-4")  # same params: resumed
    run_trainer(t, tmp_path, {"lr": 2})
    assert t.resume_arg is None and not (tmp_path / "checkpoint-4").exists()
    assert read_json(tmp_path / PARAMS_FILE) == {"lr": 2}


def test_killed_run_resumes_from_its_checkpoint(tiny, tmp_path):
    from exoflow.modeling import load_causal_lm
    from exoflow.sft import train_sft

    # logging every 3 steps: the resume at step 4 falls inside a logging window
    params, engine = SFTParams.from_dict(tiny_stage()), tiny_runtime(checkpoint_every=2,
                                                                    logging_steps=3)

    def run(name, **kw):
        d = tmp_path / name
        return train_sft(tiny.base, tiny.train, tiny.test, d / "out", d / "work", d / "logs",
                         params, engine, **kw), d

    ref, ref_dir = run("uninterrupted")
    with pytest.raises(Killed):
        run("killed", callbacks=step_callbacks(kill_at=5))
    work = tmp_path / "killed" / "work"
    # checkpoint-2 was rotated away once checkpoint-4 was complete; step 5 was never saved
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (tmp_path / "killed" / "out").exists()

    seen = []
    resumed, res_dir = run("killed", callbacks=step_callbacks(seen=seen))
    assert resumed["resumed_from"] == str(work / "checkpoint-4")
    assert seen == list(range(5, 17))  # it went on from step 4 instead of starting over
    assert resumed["global_step"] == ref["global_step"] == 16
    assert [e["step"] for e in resumed["loss_curve"]] == list(range(1, 17))
    for a, b in zip(resumed["loss_curve"], ref["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    # the whole run's mean loss, not only the steps after the resume
    assert resumed["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-5)
    assert ref["train_loss"] == pytest.approx(
        sum(e["loss"] for e in ref["loss_curve"]) / 16, abs=1e-6)
    assert resumed["test_nll"] == pytest.approx(ref["test_nll"], abs=1e-5)
    m_ref, m_res = load_causal_lm(ref_dir / "out"), load_causal_lm(res_dir / "out")
    for (name, p), q in zip(m_ref.named_parameters(), m_res.parameters()):
        assert (p - q).abs().max().item() < 1e-5, name
    assert not list(work.glob("checkpoint-*"))  # cleaned once the model is saved


# --- DeepSpeed ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_rm(tiny, tmp_path_factory):
    from exoflow.config import RMParams
    from exoflow.rm import train_rm

    d = tmp_path_factory.mktemp("plain_rm")
    return train_rm(tiny.base, tiny.train, tiny.test, d / "out", d / "work", d / "logs",
                    RMParams.from_dict(tiny_stage(epochs=1)), tiny_runtime(checkpoint_every=100))


@pytest.mark.parametrize("launcher", ["torchrun", "python"])
def test_deepspeed_zero2_on_cpu(tiny, plain_rm, tmp_path, launcher):
    """The GPU path's wiring (launcher, ZeRO-2 engine, 'auto' fill-in, save) on gloo/CPU.

    One process with configs/deepspeed/zero2.json, under torchrun (as the workflow launches
    several GPUs) or plain python (one GPU: the engine sets up a one-process group), must train
    exactly like plain PyTorch (same seed, fp32): same loss curve and test metrics.
    DeepSpeed JIT-builds its shared-memory comm op on first use (~90 s); it is cached under
    TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions), after which this takes ~20 s.
    """
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions"))
    out, work = tmp_path / "ds" / "out", tmp_path / "ds" / "work"
    stage = tiny_stage(epochs=1)
    engine = tiny_runtime(deepspeed=str(ROOT / "configs" / "deepspeed" / "zero2.json"),
                         checkpoint_every=100)
    launch = {"torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"],
              "python": []}[launcher]
    cmd = [sys.executable, *launch, str(ROOT / "workflow_scripts" / "train_stage.py"),
           "--stage", "rm", "--base", str(tiny.base),
           "--train", str(tiny.train), "--test", str(tiny.test), "--model", str(out),
           "--metrics", str(out / "metrics.json"), "--work-dir", str(work),
           "--log-dir", str(tmp_path / "ds" / "logs"),
           "--params", json.dumps(stage), "--runtime", engine.to_json()]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ds = read_json(out / "metrics.json")
    assert ds["run"]["wrapped_model"] == "DeepSpeedEngine"
    assert ds["run"]["deepspeed_zero_stage"] == 2
    assert (ds["run"]["gradient_accumulation_steps"], ds["run"]["world_size"]) == (2, 1)
    assert ds["global_step"] == 8 and len(ds["loss_curve"]) == 8
    assert (out / "model.safetensors").exists() and (out / PARAMS_FILE).exists()

    assert plain_rm["run"]["deepspeed_zero_stage"] is None
    for a, b in zip(ds["loss_curve"], plain_rm["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)
    assert ds["test_mean_margin"] == pytest.approx(plain_rm["test_mean_margin"], abs=1e-3)


_DS_DRIVER = """
import json, sys
from transformers import TrainerCallback
from exoflow.config import Runtime, SFTParams
from exoflow.sft import train_sft
base, train, test, d, kill, stage, engine = sys.argv[1:]
class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == int(kill):
            raise SystemExit(f"killed at step {kill}")
m = train_sft(base, train, test, d + "/out", d + "/work", d + "/logs",
              SFTParams.from_dict(json.loads(stage)), Runtime.from_json(engine),
              callbacks=[Kill()])
print("METRICS", json.dumps(m))
"""


@pytest.mark.slow
def test_deepspeed_killed_run_resumes(tiny, tmp_path):
    """Under DeepSpeed the Trainer resumes from DeepSpeed's own checkpoint (global_step<N>/):
    a run killed after step 5 and restarted ends where an uninterrupted one does (~70 s)."""
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "torch_extensions"))
    engine = tiny_runtime(deepspeed=str(ROOT / "configs" / "deepspeed" / "zero2.json"))

    def run(name, kill):
        cmd = [sys.executable, "-c", _DS_DRIVER, str(tiny.base), str(tiny.train), str(tiny.test),
               str(tmp_path / name), str(kill), json.dumps(tiny_stage()),
               engine.to_json()]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)

    def metrics(proc):
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        return json.loads(proc.stdout.split("METRICS ", 1)[1])

    ref = metrics(run("ref", kill=0))
    killed = run("killed", kill=5)
    assert killed.returncode != 0 and "killed at step 5" in killed.stderr
    ckpt = tmp_path / "killed" / "work" / "checkpoint-4"
    assert (ckpt / "global_step4").is_dir()  # DeepSpeed's optimizer shards
    resumed = metrics(run("killed", kill=0))
    assert resumed["resumed_from"] == str(ckpt)
    assert [e["step"] for e in resumed["loss_curve"]] == list(range(1, 17))
    for a, b in zip(resumed["loss_curve"], ref["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert resumed["test_nll"] == pytest.approx(ref["test_nll"], abs=1e-5)


# --- length-grouped batches in every stage --------------------------------------------------------


@pytest.mark.parametrize("group", [True, False])
def test_stages_draw_length_grouped_batches(tiny, tmp_path, group):
    """SFT and RM trainers get the seeded length-grouped sampler by default, over each
    example's length (RM: the longer of its pair); group_by_length: false keeps random batches."""
    import exoflow.trainer as trainer
    from exoflow.config import RMParams
    from exoflow.rm import train_rm
    from exoflow.sft import train_sft

    seen = {}
    orig = trainer.SeededLengthGroupedSampler

    def spy(batch_size, lengths, seed):
        seen.setdefault("calls", []).append((batch_size, list(lengths), seed))
        return orig(batch_size, lengths, seed)

    trainer.SeededLengthGroupedSampler = spy
    try:
        train_sft(str(tiny.base), tiny.train, tiny.test, tmp_path / "sft", tmp_path / "w1",
                  tmp_path / "l1", SFTParams.from_dict(tiny_stage(group_by_length=group)),
                  tiny_runtime())
        train_rm(str(tiny.base), tiny.train, tiny.test, tmp_path / "rm", tmp_path / "w2",
                 tmp_path / "l2", RMParams.from_dict(tiny_stage(group_by_length=group)),
                 tiny_runtime())
    finally:
        trainer.SeededLengthGroupedSampler = orig
    if not group:
        assert "calls" not in seen
        return
    (bs1, sft_len, seed1), (bs2, rm_len, seed2) = seen["calls"]
    n = len(read_records(tiny.train))
    assert len(sft_len) == len(rm_len) == n and seed1 == seed2 == tiny_runtime().seed
    assert bs1 == tiny_stage()["batch_size"] and bs2 == tiny_stage()["batch_size"]
    assert all(r >= s - 1 for s, r in zip(sft_len, rm_len))  # the RM pair's longer, no EOS
    assert len(set(sft_len)) > 1


def test_save_final_refuses_non_finite_weights(tiny, tmp_path):
    """The last line of defence: whatever slipped past the step checks, a model with a
    NaN weight is never written; the error names the run and the tensor."""
    import torch

    from exoflow.errors import NonFiniteError
    from exoflow.modeling import load_causal_lm, load_tokenizer
    from exoflow.trainer import ExoTrainer
    from exoflow.workdir import save_model

    model, tok = load_causal_lm(tiny.base), load_tokenizer(tiny.base)
    args = make_training_args(SFTParams.from_dict(tiny_stage()), tiny_runtime(), tmp_path / "work")
    trainer = ExoTrainer(model=model, args=args, run_name="train_sft")
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"train_sft \(not saved to .*\): tensor '.+' holds NaN"):
        save_model(trainer, tok, tmp_path / "out", {})
    assert not (tmp_path / "out").exists()
