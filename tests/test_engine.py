"""The shared training engine: params, batch semantics, resuming, DeepSpeed on the CPU.

Also home of the tiny fixtures the SFT and RM tests import (a 2-layer, hidden-64 GPT-NeoX and
~64 hand-written preference records).
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from exoflow.engine import (
    PARAMS_FILE,
    EngineParams,
    ParamsError,
    gradient_accumulation_steps,
    last_checkpoint,
    make_training_args,
    run_trainer,
)
from exoflow.io import read_json, read_records, write_json, write_records
from exoflow.sft import SFTParams

ROOT = Path(__file__).resolve().parents[1]

# --- tiny fixtures, shared with test_sft.py and test_rm.py -----------------------------------

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


def make_base(folder: Path) -> Path:
    """Tokenizer (byte-level BPE, 300 tokens) + a random 2-layer, hidden-64 GPT-NeoX."""
    from exoflow.modeling import build_scratch_model, train_tokenizer

    texts = [r["prompt"] + r["chosen"] + r["rejected"] for r in make_records(80)]
    tok = train_tokenizer(texts, 300, folder)
    scratch = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                   max_position_embeddings=256)
    build_scratch_model(scratch, tok, seed=0).save_pretrained(str(folder))
    return folder


def make_data(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    write_records(folder / "train.jsonl", make_records(64))
    write_records(folder / "test.jsonl", make_records(16, offset=64))
    return folder / "train.jsonl", folder / "test.jsonl"


def tiny_stage(**kw) -> dict:
    """64 records, 8 per step (2 micro-batches of 4): 8 steps per epoch."""
    return dict(dict(lr=3e-3, epochs=2, batch_size=8, micro_batch_size=4, max_len=64,
                     max_gen_len=24), **kw)


def tiny_engine(**kw) -> EngineParams:
    return EngineParams(**dict(dict(logging_steps=1, checkpoint_every=2, num_threads=1, seed=0), **kw))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    train, test = make_data(root / "data")
    return SimpleNamespace(base=make_base(root / "base"), train=train, test=test)


# --- params -----------------------------------------------------------------------------------


def test_from_dict_refuses_unknown_and_missing_keys():
    with pytest.raises(ParamsError, match=r"unknown key\(s\) \['gpu'\]"):
        EngineParams.from_dict({"gpu": 1})
    with pytest.raises(ParamsError, match=r"SFTParams: unknown key\(s\) \['learning_rate'\]"):
        SFTParams.from_dict(tiny_stage(learning_rate=1e-3))
    with pytest.raises(ParamsError, match=r"missing key\(s\) \['lr'\]"):
        SFTParams.from_dict({k: v for k, v in tiny_stage().items() if k != "lr"})
    e = EngineParams.from_dict({"deepspeed": None, "gpus": 0, "dtype": "bf16", "seed": 3})
    assert (e.dtype, e.seed, e.checkpoint_every) == ("bf16", 3, 200)


def test_shipped_config_sections_parse():
    import yaml

    for path in (ROOT / "config.yaml", ROOT / "configs" / "tiny.yaml"):
        cfg = yaml.safe_load(path.read_text())
        eng = dict(cfg["engine"], dtype=cfg["model"]["dtype"], seed=cfg["seed"])
        if eng["deepspeed"]:
            eng["deepspeed"] = str(ROOT / eng["deepspeed"])
        EngineParams.from_dict(eng)
        SFTParams.from_dict(cfg["sft"])
        SFTParams.from_dict(cfg["rm"])


def test_bad_values_are_refused_with_what_to_set():
    with pytest.raises(ParamsError, match="not a multiple of micro_batch_size"):
        SFTParams.from_dict(tiny_stage(batch_size=10))
    with pytest.raises(ParamsError, match="max_gen_len < max_len"):
        SFTParams.from_dict(tiny_stage(max_gen_len=64))
    with pytest.raises(ParamsError, match="dtype"):
        EngineParams(dtype="float16")
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
    with pytest.raises(ParamsError, match=r"64 is not divisible by micro_batch_size 8 x 3"):
        gradient_accumulation_steps(64, 8, 3)


def test_training_args(tmp_path):
    p = SFTParams.from_dict(tiny_stage(warmup_ratio=0.1))
    args = make_training_args(p, tiny_engine(dtype="bf16"), tmp_path / "work", tmp_path / "logs",
                              n_procs=2)
    assert args.gradient_accumulation_steps == 1 and args.per_device_train_batch_size == 4
    assert args.bf16 and not args.fp16 and args.use_cpu  # bf16 autocast on the CPU too
    assert not make_training_args(p, tiny_engine(), tmp_path / "w2", n_procs=2).bf16
    with pytest.raises(ParamsError, match="fp16 needs a GPU"):
        make_training_args(p, tiny_engine(dtype="fp16"), tmp_path / "w3", n_procs=2)
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


class Killed(RuntimeError):
    pass


def _callbacks(kill_at=None, seen=None):
    from transformers import TrainerCallback

    class Cb(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if seen is not None:
                seen.append(state.global_step)
            if state.global_step == kill_at:
                raise Killed(f"killed at step {kill_at}")

    return [Cb()]


def test_killed_run_resumes_from_its_checkpoint(tiny, tmp_path):
    from exoflow.modeling import load_causal_lm
    from exoflow.sft import train_sft

    # logging every 3 steps: the resume at step 4 falls inside a logging window
    params, engine = SFTParams.from_dict(tiny_stage()), tiny_engine(checkpoint_every=2,
                                                                    logging_steps=3)

    def run(name, **kw):
        d = tmp_path / name
        return train_sft(tiny.base, tiny.train, tiny.test, d / "out", d / "work", d / "logs",
                         params, engine, **kw), d

    ref, ref_dir = run("uninterrupted")
    with pytest.raises(Killed):
        run("killed", callbacks=_callbacks(kill_at=5))
    work = tmp_path / "killed" / "work"
    # checkpoint-2 was rotated away once checkpoint-4 was complete; step 5 was never saved
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (tmp_path / "killed" / "out").exists()

    seen = []
    resumed, res_dir = run("killed", callbacks=_callbacks(seen=seen))
    assert resumed["resumed_from"] == str(work / "checkpoint-4")
    assert seen == list(range(5, 17))  # it went on from step 4 instead of starting over
    assert resumed["global_step"] == ref["global_step"] == 16
    assert [e["step"] for e in resumed["train_loss_curve"]] == list(range(1, 17))
    for a, b in zip(resumed["train_loss_curve"], ref["train_loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    # the whole run's mean loss, not only the steps after the resume (issue 10)
    assert resumed["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-5)
    assert ref["train_loss"] == pytest.approx(
        sum(e["loss"] for e in ref["train_loss_curve"]) / 16, abs=1e-6)
    assert resumed["test_nll"] == pytest.approx(ref["test_nll"], abs=1e-5)
    m_ref, m_res = load_causal_lm(ref_dir / "out"), load_causal_lm(res_dir / "out")
    for (name, p), q in zip(m_ref.named_parameters(), m_res.parameters()):
        assert (p - q).abs().max().item() < 1e-5, name
    assert not list(work.glob("checkpoint-*"))  # cleaned once the model is saved


# --- DeepSpeed ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_rm(tiny, tmp_path_factory):
    from exoflow.rm import RMParams, train_rm

    d = tmp_path_factory.mktemp("plain_rm")
    return train_rm(tiny.base, tiny.train, tiny.test, d / "out", d / "work", d / "logs",
                    RMParams.from_dict(tiny_stage(epochs=1)), tiny_engine(checkpoint_every=100))


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
    engine = tiny_engine(deepspeed=str(ROOT / "configs" / "deepspeed" / "zero2.json"),
                         checkpoint_every=100)
    launch = {"torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"],
              "python": []}[launcher]
    cmd = [sys.executable, *launch, str(ROOT / "workflow_scripts" / "train_stage.py"),
           "--stage", "rm", "--base", str(tiny.base),
           "--train", str(tiny.train), "--test", str(tiny.test), "--out", str(out),
           "--work-dir", str(work), "--log-dir", str(tmp_path / "ds" / "logs"),
           "--params", json.dumps(stage), "--engine", json.dumps(engine.to_dict())]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ds = read_json(out / "metrics.json")
    assert ds["run"]["wrapped_model"] == "DeepSpeedEngine"
    assert ds["run"]["deepspeed_zero_stage"] == 2
    assert (ds["run"]["gradient_accumulation_steps"], ds["run"]["world_size"]) == (2, 1)
    assert ds["global_step"] == 8 and len(ds["train_loss_curve"]) == 8
    assert (out / "model.safetensors").exists() and (out / PARAMS_FILE).exists()

    assert plain_rm["run"]["deepspeed_zero_stage"] is None
    for a, b in zip(ds["train_loss_curve"], plain_rm["train_loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)
    assert ds["test_mean_margin"] == pytest.approx(plain_rm["test_mean_margin"], abs=1e-3)


_DS_DRIVER = """
import json, sys
from transformers import TrainerCallback
from exoflow.engine import EngineParams
from exoflow.sft import SFTParams, train_sft
base, train, test, d, kill, stage, engine = sys.argv[1:]
class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == int(kill):
            raise SystemExit(f"killed at step {kill}")
m = train_sft(base, train, test, d + "/out", d + "/work", d + "/logs",
              SFTParams.from_dict(json.loads(stage)), EngineParams.from_dict(json.loads(engine)),
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
    engine = tiny_engine(deepspeed=str(ROOT / "configs" / "deepspeed" / "zero2.json"))

    def run(name, kill):
        cmd = [sys.executable, "-c", _DS_DRIVER, str(tiny.base), str(tiny.train), str(tiny.test),
               str(tmp_path / name), str(kill), json.dumps(tiny_stage()),
               json.dumps(engine.to_dict())]
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
    assert [e["step"] for e in resumed["train_loss_curve"]] == list(range(1, 17))
    for a, b in zip(resumed["train_loss_curve"], ref["train_loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert resumed["test_nll"] == pytest.approx(ref["test_nll"], abs=1e-5)


# --- length-grouped batches in every stage --------------------------------------------------------


@pytest.mark.parametrize("group", [True, False])
def test_stages_draw_length_grouped_batches(tiny, tmp_path, group):
    """SFT and RM trainers get the seeded length-grouped sampler by default, over each
    example's length (RM: the longer of its pair); group_by_length: false keeps random batches."""
    import exoflow.engine as eng
    from exoflow.rm import RMParams, train_rm
    from exoflow.sft import train_sft

    seen = {}
    orig = eng.length_grouped_sampler

    def spy(batch_size, lengths, seed):
        seen.setdefault("calls", []).append((batch_size, list(lengths), seed))
        return orig(batch_size, lengths, seed)

    eng.length_grouped_sampler = spy
    try:
        train_sft(str(tiny.base), tiny.train, tiny.test, tmp_path / "sft", tmp_path / "w1",
                  tmp_path / "l1", SFTParams.from_dict(tiny_stage(group_by_length=group)),
                  tiny_engine())
        train_rm(str(tiny.base), tiny.train, tiny.test, tmp_path / "rm", tmp_path / "w2",
                 tmp_path / "l2", RMParams.from_dict(tiny_stage(group_by_length=group)),
                 tiny_engine())
    finally:
        eng.length_grouped_sampler = orig
    if not group:
        assert "calls" not in seen
        return
    (bs1, sft_len, seed1), (bs2, rm_len, seed2) = seen["calls"]
    n = len(read_records(tiny.train))
    assert len(sft_len) == len(rm_len) == n and seed1 == seed2 == tiny_engine().seed
    assert bs1 == tiny_stage()["batch_size"] and bs2 == tiny_stage()["batch_size"]
    assert all(r >= s - 1 for s, r in zip(sft_len, rm_len))  # the RM pair's longer, no EOS
    assert len(set(sft_len)) > 1


def test_save_final_refuses_non_finite_weights(tiny, tmp_path):
    """The last line of defence (issue 10): whatever slipped past the step checks, a model with a
    NaN weight is never written; the error names the run and the tensor."""
    import torch

    from exoflow import engine as eng
    from exoflow.errors import NonFiniteError
    from exoflow.modeling import load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(tiny.base), load_tokenizer(tiny.base)
    args = eng.make_training_args(SFTParams.from_dict(tiny_stage()), tiny_engine(),
                                  tmp_path / "work")
    trainer = eng.trainer_class()(model=model, args=args, run_name="train_sft")
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"train_sft \(not saved to .*\): tensor '.+' holds NaN"):
        eng.save_final(trainer, tok, tmp_path / "out", {})
    assert not (tmp_path / "out").exists()
