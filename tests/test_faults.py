"""Issue 10: no injected fault ends in exit 0 with a wrong result, and none ends with a traceback
as its only message. Each row of the issue's table, through the real CLI (``workflow_scripts/``)
or the real Snakemake rule.

A CLI's failure is checked to be exactly one line on stderr (``error: <file>[:<line>]: ...``),
naming what is broken and what to do.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from exoflow.config import AlignParams
from exoflow.io import read_json, read_records, write_json, write_records
from tests.helpers import (
    SCRIPTS,
    align_params,
    copy_workflow,
    make_align_data,
    make_base,
    make_data,
    one_line_error,
    snakemake,
    tiny_runtime,
    tiny_stage,
)
from tests.helpers import script as cli

RUNTIME = tiny_runtime()
GENERATION = {"num_return": 1, "max_new_tokens": 4}
LAYOUT = {"max_len": 64, "max_gen_len": 24}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_align_data(tmp_path_factory.mktemp("faults"))


def align_cli(tiny, name, train, ref=None, **params):
    d = tiny.root / name
    args = ["--policy", tiny.sft, "--train", train, "--metrics", d / "out" / "metrics.json",
            "--work-dir", d / "work", "--log-dir", d / "logs", "--align", align_params(**params),
            "--runtime", RUNTIME, "--ref-code", None]
    if ref is not None:
        args += ["--ref-logps", ref]
    return cli("train_align", *args), d


def ref_cli(tiny, data, out, *extra):
    return cli("precompute_ref", "--reference", tiny.sft, "--data", data, "--cache", out,
               "--temp", 0.8, "--max-len", 64, "--max-gen-len", 24, "--eos", 1, "--batch-size", 8,
               "--runtime", RUNTIME, *extra)


def sample_cli(model, prompts, out):
    return cli("sample", "--model", model, "--prompts", prompts, "--samples", out,
               "--generation", GENERATION, "--seed", 0)


# --- non-finite values -------------------------------------------------------------------------


def test_nan_reward_is_refused_naming_file_and_line(tiny):
    recs = read_records(tiny.k4)
    path = tiny.root / "nan_rewards.jsonl"
    lines = [json.dumps(r) for r in recs]
    lines[6] = re.sub(r'"rewards": \[[^,]+,', '"rewards": [NaN,', lines[6])
    assert "NaN" in lines[6]
    path.write_text("\n".join(lines) + "\n")
    proc, d = align_cli(tiny, "nan", path)
    one_line_error(proc, f"{path}:7", "NaN is not a finite number")
    assert not (d / "out").exists()
    one_line_error(ref_cli(tiny, path, tiny.root / "nan_ref.jsonl"), f"{path}:7")


def test_diverging_step_stops_the_run_and_writes_no_checkpoint(tiny):
    """Finite rewards too large for the loss (r / beta_r overflows): the first step's loss is
    NaN. The job stops with one line naming the step and the run; no checkpoint is written and
    train_loss is never logged as 0.0."""
    recs = read_records(tiny.k4)
    for r in recs:
        r["rewards"] = [1e308, -1e308, 0.0, 1.0]
    path = tiny.root / "huge_rewards.jsonl"
    write_records(path, recs)
    proc, d = align_cli(tiny, "diverge", path, max_steps=2, save_every=1)
    one_line_error(proc, "train_align out", "training loss is nan at optimizer step 1")
    assert not list((d / "work").glob("ckpt*")) and not (d / "out").exists()


def test_non_finite_weights_are_never_sampled(tiny):
    """A checkpoint whose weights hold NaN (written by some other tool): sampling refuses it
    naming the tensor, instead of writing " Planet Planet Planet ..."."""
    import torch
    from safetensors.torch import load_file, save_file

    bad = tiny.root / "nan_model"
    make_base(bad)
    sd = load_file(bad / "model.safetensors")
    name = sorted(sd)[3]
    sd[name] = torch.full_like(sd[name], float("nan"))
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    out = tiny.root / "samples_nan.jsonl"
    proc = sample_cli(bad, tiny.k4, out)
    one_line_error(proc, str(bad), "holds NaN or infinite values")
    assert not out.exists()


# --- readers name what is broken ---------------------------------------------------------------


def test_invalid_json_line_names_file_and_line(tiny):
    path = tiny.root / "bad_line.jsonl"
    lines = tiny.k4.read_text().splitlines()
    lines[2] = lines[2][:-5]
    path.write_text("\n".join(lines) + "\n")
    proc = ref_cli(tiny, path, tiny.root / "x.jsonl")
    one_line_error(proc, f"{path}:3: not valid JSON", "delete it")


def test_completions_and_rewards_of_other_lengths_name_the_1_based_line(tiny):
    recs = read_records(tiny.k4)
    recs[2]["rewards"] = recs[2]["rewards"][:3]
    path = tiny.root / "short_rewards.jsonl"
    write_records(path, recs)
    proc, _ = align_cli(tiny, "short", path)
    one_line_error(proc, f"{path}:3: 3 rewards for 4 completions")


def test_cut_or_edited_reference_cache_is_refused(tiny):
    text = tiny.cache.read_text()
    cut = tiny.root / "cut_cache.jsonl"
    cut.write_text(text[: len(text) // 2])  # mid-line
    proc, d = align_cli(tiny, "cut", tiny.k4, ref=cut)
    one_line_error(proc, f"{cut}: content does not match its checksum", "precompute_ref")
    lines = text.splitlines()
    shifted = tiny.root / "shifted_cache.jsonl"
    shifted.write_text("\n".join([lines[0]] + [json.dumps([v + 5 for v in json.loads(x)])
                                                for x in lines[1:]]) + "\n")
    proc, d = align_cli(tiny, "shifted", tiny.k4, ref=shifted)
    one_line_error(proc, f"{shifted}: content does not match its checksum")
    assert not (d / "out").exists()


def test_truncated_safetensors_is_named(tiny):
    cut = tiny.root / "cut_model"
    make_base(cut)
    st = cut / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    proc = sample_cli(cut, tiny.k4, tiny.root / "s.jsonl")
    one_line_error(proc, f"{st}: not a complete safetensors file", "truncated",
                   "delete the folder")
    st.write_bytes(b"\x05\x00")
    proc = cli("label_rewards", "--rm", cut, "--samples", tiny.k4, "--labels",
               tiny.root / "r.jsonl", "--batch-size", 4, "--rm-layout", LAYOUT)
    one_line_error(proc, f"{st}: not a complete safetensors file", "header too small")


def test_corrupt_metrics_file_names_file_and_line(tmp_path):
    ok = tmp_path / "ok.json"
    write_json(ok, {"read": 3})
    bad = tmp_path / "test.json"
    bad.write_text('{\n  "read": 3,\n  "kept": \n}\n')
    proc = cli("data_stats", "--splits", ok, bad, "--stats", tmp_path / "stats.json")
    one_line_error(proc, f"{bad}:4: not valid JSON")


def test_debug_shows_the_traceback(tiny):
    path = tiny.root / "bad_line_debug.jsonl"
    path.write_text("{\n")
    out = tiny.root / "y.jsonl"
    for proc in (ref_cli(tiny, path, out, "--debug"),
                 cli("precompute_ref", "--reference", tiny.sft, "--data", path, "--cache", out,
                     "--temp", 0.8, "--max-len", 64, "--max-gen-len", 24, "--eos", 1, "--batch-size", 8,
                     "--runtime", RUNTIME, env={"EXOFLOW_DEBUG": "1"})):
        assert proc.returncode != 0 and "Traceback" in proc.stderr and "RecordError" in proc.stderr


# --- checkpoint grid and a clean output folder -------------------------------------------------


def test_stale_checkpoints_do_not_survive(tiny):
    d = tiny.root / "stale"
    (d / "out" / "ckpt3").mkdir(parents=True)
    (d / "out" / "ckpt3" / "config.json").write_text("{}")
    (d / "out" / "notes.txt").write_text("old")
    proc, d = align_cli(tiny, "stale", tiny.k4, ref=tiny.cache, max_steps=2, save_every=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (d / "out").iterdir()) == [
        "ckpt1", "ckpt2", "metrics.json"]  # the job's lock file is gone with the job


def test_max_steps_not_a_multiple_of_save_every_is_refused(tiny):
    proc = cli("train_align", "--policy", tiny.sft, "--train", tiny.k4,
               "--metrics", tiny.root / "o" / "metrics.json", "--work-dir", tiny.root / "w",
               "--log-dir", tiny.root / "l", "--ref-code", None,
               "--align", dict(align_params().to_dict(), max_steps=5, save_every=4),
               "--runtime", RUNTIME)
    one_line_error(proc, "max_steps 5 is not a multiple of save_every 4")


# --- resume reports the whole run --------------------------------------------------------------


def test_kill_9_during_sft_then_rerun_reports_every_step(tmp_path):
    """SIGKILL the real train_sft CLI once its step-4 checkpoint exists, run it again: the
    metrics equal an uninterrupted run's, train_loss included (it covered only the steps after
    the resume)."""
    train, test = make_data(tmp_path / "data")
    base = make_base(tmp_path / "base")
    runtime = tiny_runtime(logging_steps=3, checkpoint_every=4).to_json()
    params = json.dumps(tiny_stage(epochs=4))  # 32 steps

    def cmd(name):
        d = tmp_path / name
        return [sys.executable, str(SCRIPTS / "train_stage.py"), "--stage", "sft", "--base",
                str(base), "--train", str(train), "--test", str(test), "--model", str(d / "out"),
                "--metrics", str(d / "out" / "metrics.json"), "--work-dir", str(d / "work"),
                "--log-dir", str(d / "logs"), "--params", params, "--runtime", runtime], d

    c, ref_dir = cmd("uninterrupted")
    subprocess.run(c, check=True, capture_output=True, timeout=600)
    c, d = cmd("killed")
    proc = subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (d / "work" / "checkpoint-4" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint-4 before the end"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (d / "out" / "metrics.json").exists()
    subprocess.run(c, check=True, capture_output=True, timeout=600)
    ref, res = read_json(ref_dir / "out" / "metrics.json"), read_json(d / "out" / "metrics.json")
    assert res["resumed_from"] is not None and res["global_step"] == ref["global_step"] == 32
    assert [e["step"] for e in res["loss_curve"]] == list(range(1, 33))
    for a, b in zip(res["loss_curve"], ref["loss_curve"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert res["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-5)
    assert res["train_loss"] == pytest.approx(
        sum(e["loss"] for e in res["loss_curve"]) / 32, abs=1e-6)


# --- shareable outputs -------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_get_the_umask_permissions(tiny, tmp_path, umask):
    pairs = tmp_path / "pairs.jsonl"
    write_records(pairs, [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    out = tmp_path / "p2r.jsonl"
    cli("pref_to_rewards", "--pairs", pairs, "--records", out, umask=umask, check=True)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert left == []  # no temp file left, nor the job's lock file
    old = os.umask(umask)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~umask


# --- through Snakemake: config validation and safe shell ---------------------------------------

QUICK = {"data": {"synthetic": {"num_train": 40, "num_test": 8}},
         "sft": {"epochs": 1, "batch_size": 8, "micro_batch_size": 8, "max_steps": 1}}


def _write_cfg(wd, **overrides):
    cfg = json.loads(json.dumps(QUICK))
    for k, v in overrides.items():
        cfg.setdefault(k, {}).update(v)
    (wd / "quick.yaml").write_text(yaml.safe_dump(cfg))
    return ["--configfile", "configs/tiny.yaml", "quick.yaml"]


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf"))


def test_dry_run_refuses_a_bad_model_init(wf, tmp_path):
    empty = tmp_path / "empty_model"
    empty.mkdir()
    for init, needles in [(str(empty), ["model.init", str(empty), "no config.json"]),
                          ("x$(touch PWNED)", ["model.init", "neither an existing local folder"]),
                          (str(tmp_path / "missing"), ["model.init", "neither"])]:
        proc = snakemake(wf, "eval_all", "-n", *_write_cfg(wf, model={"init": init}))
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and all(n in out for n in needles), out[-3000:]
    assert not list(wf.rglob("PWNED")) and not list(Path.cwd().glob("PWNED"))


def test_dry_run_refuses_a_checkpoint_grid_that_drops_steps(wf):
    cfg = _write_cfg(wf, align={"defaults": {"max_steps": 5, "save_every": 4}})
    proc = snakemake(wf, "eval_all", "-n", *cfg)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "align.runs.exo-rw_nc2: max_steps 5 is not a multiple of save_every 4" in out


def test_rules_quote_every_path(tmp_path):
    """The workflow under a folder whose name holds a space and $(...), model.init a local
    checkpoint folder named the same way: SFT (and the data rules before it) run, and nothing
    is executed from a name."""
    wd = tmp_path / "work dir $(touch PWNED_WD)"
    wd.mkdir()
    copy_workflow(wd)
    base = make_base(tmp_path / "base model $(touch PWNED_INIT)")
    cfg = _write_cfg(wd, model={"init": str(base)})
    proc = snakemake(wd, "results/tiny/models/sft/config.json", "results/tiny/data/p2r/test.jsonl",
                     *cfg)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert read_json(wd / "results/tiny/models/sft/metrics.json")["global_step"] == 1
    pwned = [p for p in tmp_path.rglob("PWNED*")] + list(Path.cwd().glob("PWNED*"))
    assert not pwned, pwned


def test_a_failed_job_shows_its_one_line_on_the_terminal(wf, tmp_path):
    """profiles/default (picked up by itself) prints the failed job's log: the one-line error
    reaches the terminal, not only 'check log file(s)'. (A raw data line that is not JSON: the
    dry run cannot see it, the preprocess job can.)"""
    raw = tmp_path / "raw"
    raw.mkdir()
    good = json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: hello",
                       "rejected": "\n\nHuman: hi\n\nAssistant: go away"})
    (raw / "train.jsonl").write_text(good + "\n" + good[:-5] + "\n")
    (raw / "test.jsonl").write_text(good + "\n")
    cfg = _write_cfg(wf, data={"source": "local", "path": str(raw)},
                     eval={"select_by": "reward"})
    proc = snakemake(wf, "results/tiny/data/pref/train.jsonl", *cfg)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"error: {raw / 'train.jsonl'}:2: " in out, out[-3000:]


def test_run_params_reaching_the_scripts_are_the_configs_own(wf):
    """The JSON a training rule passes is align.defaults updated with the run's entry, nothing
    else: Snakemake's validation must not fill the schema's defaults into the run entries,
    where they would override align.defaults (max_len 512 instead of the tiny preset's 256)."""
    proc = snakemake(wf, "results/tiny/models/align/exo-rw_nc2/metrics.json", "-n", "-p",
                     "--forceall", "--configfile", "configs/tiny.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    m = re.search(r"train_align\.py .*?--align '(\{[^']*\})'", out)
    assert m, out[-3000:]
    tiny = yaml.safe_load((wf / "configs" / "tiny.yaml").read_text())["align"]
    given = {**yaml.safe_load((wf / "config.yaml").read_text())["align"]["defaults"],
             **tiny["defaults"], **tiny["runs"]["exo-rw_nc2"]}
    assert json.loads(m.group(1)) == AlignParams.from_dict(given).to_dict()
    assert {k: json.loads(m.group(1))[k] for k in given} == given
    m = re.search(r"train_stage\.py (?:--exoflow-code \S+ )?--stage sft .*?--params '(\{[^']*\})'",
                  out)
    given = {**yaml.safe_load((wf / "config.yaml").read_text())["sft"],
             **yaml.safe_load((wf / "configs" / "tiny.yaml").read_text())["sft"]}
    assert {k: json.loads(m.group(1))[k] for k in given} == given


def test_infinities_and_overflowing_numbers_are_refused(tmp_path):
    """json reads Infinity, -Infinity and 1e999 (which overflows to inf) without complaint: every
    reader refuses them, naming file and line."""
    from exoflow.io import RecordError, read_json, read_records

    for token in ("Infinity", "-Infinity", "1e999"):
        p = tmp_path / "r.jsonl"
        p.write_text('{"rewards": [1.0]}\n\n{"rewards": [' + token + "]}\n")
        with pytest.raises(RecordError, match=rf"r\.jsonl:3: not valid JSON \({re.escape(token)} "
                                              "is not a finite number\\)"):
            read_records(p)
        j = tmp_path / "m.json"
        j.write_text('{\n  "a": 1,\n  "b": ' + token + "\n}\n")
        with pytest.raises(RecordError, match=r"m\.json:3: not valid JSON"):
            read_json(j)


def test_killed_workflow_recovers_as_the_readme_says(tmp_path):
    """README, "When something fails": kill -9 Snakemake (and its job) mid-SFT; the same command
    is refused (locked, naming --unlock); the same command with --unlock, then the same command,
    finishes. (The job's output did not exist yet, so this does not exercise rerun-incomplete,
    which the default profile sets for outputs that a killed job had started to replace.)"""
    wd = tmp_path / "wf"
    wd.mkdir()
    copy_workflow(wd)
    cfg = _write_cfg(wd)
    target = "results/tiny/models/sft/config.json"
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", target, *cfg]
    proc = subprocess.Popen(cmd, cwd=wd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    started = wd / "results/tiny/logs/train_sft/log.log"
    deadline = time.time() + 300
    while not started.exists():
        assert proc.poll() is None and time.time() < deadline, "train_sft never started"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (wd / target).exists()
    locked = snakemake(wd, target, *cfg)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    assert snakemake(wd, target, *cfg, "--unlock").returncode == 0
    done = snakemake(wd, target, *cfg)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert read_json(wd / "results/tiny/models/sft/metrics.json")["global_step"] == 1
