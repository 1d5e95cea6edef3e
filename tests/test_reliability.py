"""Concurrent runs, full disks, odd input: each fault reproduced
through the real CLI or rule, ending in one clear line, nothing made twice or half, and weights
readable by colleagues."""

import json
import os
import resource
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from exoflow.config.check import ConfigError, check_config
from exoflow.io import read_json, write_records
from tests.helpers import (
    ROOT,
    SCRIPTS,
    copy_workflow,
    make_base,
    make_data,
    make_records,
    one_line_error,
    script,
    snakemake,
    tiny_runtime,
    tiny_stage,
)

CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
TINY = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())


def merged(*overlays):
    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(dict(a.get(k) or {}), v) if isinstance(v, dict) and \
                isinstance(a.get(k), dict) else v
        return a

    cfg = json.loads(json.dumps(CONFIG))
    for o in overlays:
        cfg = merge(cfg, json.loads(json.dumps(o)))
    return cfg


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    train, test = make_data(root / "data")
    return root, make_base(root / "base"), train, test


def sft_cmd(base, out, **stage):
    root, model, train, test = base
    return [sys.executable, str(SCRIPTS / "train_stage.py"), "--stage", "sft", "--base",
            str(model), "--train", str(train), "--test", str(test), "--model",
            str(out / "config.json"), "--metrics", str(out / "metrics.json"), "--work-dir",
            str(out.parent / f"{out.name}_work"), "--log-dir", str(out.parent / f"{out.name}_log"),
            "--params", json.dumps(tiny_stage(**stage)), "--runtime", tiny_runtime().to_json()]


# ---- a job never runs twice at once ----------------------------------------------------------


def test_a_second_process_making_the_same_outputs_exits_naming_the_first(base, tmp_path):
    out = tmp_path / "sft"
    first = subprocess.Popen(sft_cmd(base, out, epochs=6), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    lock = out / ".exoflow-lock-config.json"
    deadline = time.time() + 120
    while not (lock.exists() and "process" in lock.read_text()):
        assert first.poll() is None and time.time() < deadline, first.stderr.read()[-2000:]
        time.sleep(0.05)
    second = subprocess.run(sft_cmd(base, out, epochs=6), capture_output=True, text=True,
                            timeout=120)
    one_line_error(second, f"{out / 'config.json'} is being made by process {first.pid} on ",
                   "this job would make it twice at once")
    assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
    assert read_json(out / "metrics.json")["global_step"] == 48  # the first one's, whole
    assert not lock.exists()  # removed when the job ended


def test_a_lock_left_by_a_killed_job_is_taken_and_a_failed_job_leaves_no_folder(tmp_path):
    """kill -9 leaves the lock file unheld: the next job takes it and removes it when it ends;
    a job that fails before writing leaves neither its lock file nor the folder it made."""
    from exoflow import locks

    out = tmp_path / "m" / "config.json"
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from exoflow import locks; "
            "locks.hold([sys.argv[1]]); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out), str(ROOT)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(locks.JobLockError, match=f"is being made by process {holder.pid} "):
        locks.hold([out])
    holder.kill()
    holder.wait()
    assert locks.lock_path(out).exists()  # left behind, but no longer held
    locks.hold([out])
    locks.release_all()
    assert not locks.lock_path(out).exists() and out.parent.exists()  # the folder was there
    fresh = tmp_path / "never" / "made" / "config.json"
    locks.hold([fresh])
    locks.release_all()
    assert not (tmp_path / "never").exists()


QUICK = {"data": {"synthetic": {"num_train": 1500, "num_test": 16}},
         "sft": {"epochs": 3, "batch_size": 16, "micro_batch_size": 16},
         "align": {"only": ["exo-rw_nc2"]}, "study": {"compare": []}}


@pytest.mark.e2e
@pytest.mark.slow  # 40 s; the job lock's refusal: test_a_second_process_making_the_same_outputs_exits_naming_the_first
def test_three_snakemakes_never_run_one_job_twice(tmp_path):
    """A trains SFT; B, on another target in the same folder (another run_name: no file in
    common, so Snakemake lets it run beside A), exits and so removes
    .snakemake/locks/ (Snakemake's persistence deletes the whole folder); C, on A's target, is
    then not refused by Snakemake and starts train_sft: the job lock refuses it with one line
    naming A's job, and A's SFT ends whole."""
    wd = copy_workflow(tmp_path)
    (wd / "quick.yaml").write_text(yaml.safe_dump(QUICK))
    cfg = ["--configfile", "configs/tiny.yaml", "quick.yaml"]
    target = "results/tiny/models/sft/config.json"
    a = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", target, *cfg],
                         cwd=wd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock = wd / "results/tiny/models/sft/.exoflow-lock-config.json"
    deadline = time.time() + 300
    while not (lock.exists() and "process" in lock.read_text()):
        assert a.poll() is None and time.time() < deadline, a.stdout.read()[-3000:]
        time.sleep(0.1)
    (wd / "other.yaml").write_text("run_name: other\n")  # B shares no file with A
    b = snakemake(wd, "results/other/data/p2r/test.jsonl", *cfg, "other.yaml")
    assert b.returncode == 0, (b.stdout + b.stderr)[-3000:]
    assert not list((wd / ".snakemake" / "locks").glob("*"))  # B removed A's lock
    c = snakemake(wd, target, *cfg)
    out = c.stdout + c.stderr
    assert c.returncode != 0 and "is being made by process" in out, out[-3000:]
    assert a.wait(timeout=600) == 0, a.stdout.read()[-3000:]
    assert read_json(wd / "results/tiny/models/sft/metrics.json")["global_step"] > 0


# ---- a full disk: one line, nothing half-made ------------------------------------------------


def _small_disk(cmd, folder: Path, size="2m"):
    """``cmd`` writing into ``folder`` on a tmpfs of ``size`` (a private mount namespace), or,
    where no tmpfs can be mounted, under a file size limit (EFBIG instead of ENOSPC)."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode == 0 and shutil.which("mount"):
        inner = f"mount -t tmpfs -o size={size} tmpfs {folder} && exec \"$@\""
        return subprocess.run(["unshare", "-m", "sh", "-c", inner, "sh", *cmd],
                              capture_output=True, text=True, timeout=300), "tmpfs"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit), "rlimit"


def test_a_full_disk_gives_one_line_and_no_half_model(base, tmp_path):
    """init_base_model onto a 2 MB disk (its weights take ~6 MB): one line naming the folder,
    the failure and the room left; the declared output (config.json) does not exist, nor any
    temporary folder."""
    root, model, _, _ = base
    out = tmp_path / "disk" / "base"
    cmd = [sys.executable, str(SCRIPTS / "init_base_model.py"), "--tokenizer", str(model),
           "--scratch", json.dumps(dict(TINY["model"]["scratch"])), "--seed", "0",
           "--model", str(out / "config.json")]
    proc, how = _small_disk(cmd, tmp_path / "disk")
    line = one_line_error(proc, str(out))
    assert ("no space left on the device" if how == "tmpfs" else "larger than this process may "
            "write") in line and "MiB free" in line, line
    assert not (out / "config.json").exists()
    assert not [p for p in (tmp_path / "disk").rglob("*.tmp-*")]


def test_a_full_disk_while_writing_records_gives_one_line(tmp_path):
    cmd = [sys.executable, str(SCRIPTS / "preprocess.py"), "--split", "train", "--data",
           json.dumps({"source": "synthetic", "synthetic": {"num_train": 20000}}), "--seed", "0",
           "--pairs", str(tmp_path / "disk" / "train.jsonl"), "--stats",
           str(tmp_path / "disk" / "stats.json")]
    proc, how = _small_disk(cmd, tmp_path / "disk", size="256k")
    one_line_error(proc, "MiB free")
    assert not (tmp_path / "disk" / "train.jsonl").exists()


def test_a_full_disk_during_the_trainers_checkpoint_gives_one_line(base, tmp_path):
    """SFT whose work folder (the Trainer's resume checkpoints) fills a 1 MB disk at the first
    checkpoint (weights and optimizer state take ~3 MB): one line naming the work folder and
    the room left, no checkpoint folder half-written, no output."""
    out = tmp_path / "disk" / "sft"
    proc, how = _small_disk(sft_cmd(base, out, epochs=1), tmp_path / "disk", size="1m")
    line = one_line_error(proc, "MiB free")
    assert ("no space left on the device" if how == "tmpfs" else "larger than this process "
            "may write") in line, line
    assert not (out / "config.json").exists()
    work = tmp_path / "disk" / "sft_work"
    assert not [p for p in work.glob("checkpoint-*") if not (p / "trainer_state.json").exists()]


def test_a_full_tmpdir_does_not_stop_snakemake(tmp_path):
    """TMPDIR on a full disk: the data stage (two jobs ready at once, so the scheduler picks)
    runs; the ILP scheduler's problem file used to fail it before any job ran."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespace here to make a full TMPDIR in")
    (tmp_path / "wf").mkdir()
    wd = copy_workflow(tmp_path / "wf")
    full = tmp_path / "tmp"
    full.mkdir()
    inner = (f"mount -t tmpfs -o size=64k tmpfs {full} && "
             f"(dd if=/dev/zero of={full}/fill bs=4k count=100 2>/dev/null || true) && "
             f"cd {wd} && TMPDIR={full} exec \"$@\"")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", inner, "sh", sys.executable, "-m",
                           "snakemake", "--cores", "2", "data", "--configfile",
                           "configs/tiny.yaml"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (wd / "results/tiny/data/stats.json").exists()


def test_weights_get_the_umask_permissions(base, tmp_path):
    """safetensors writes its files 0600: every file of a model folder gets 0666 & ~umask."""
    for umask in (0o022, 0o002):
        out = tmp_path / f"sft{umask:o}"
        proc = subprocess.run(sft_cmd(base, out, epochs=1, max_steps=1), capture_output=True,
                              text=True, timeout=300, preexec_fn=lambda m=umask: os.umask(m))
        assert proc.returncode == 0, proc.stderr[-3000:]
        for f in out.iterdir():
            if f.is_file():
                assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, (f, umask)


# ---- everything checkable is checked by the dry run -------------------------------------------


@pytest.mark.parametrize("overlay,needles", [
    ({"align": {"defaults": {"num_contrastive": 4}}},
     ["align.defaults.num_contrastive (run exo-rw_nc2) = 4 does not divide the 2 candidates",
      "sample.num_return = 2"]),
    ({"eval": {"checkpoints": 9}}, ["eval.checkpoints = 9 but run exo-rw_nc2 has 3 checkpoint"]),
    ({"data": {"source": "local", "path": "/nonexistent"}, "eval": {"select_by": "reward"}},
     ["data.path: /nonexistent: no train.jsonl"]),
    ({"data": {"source": "local", "path": None}, "eval": {"select_by": "reward"}},
     ["data.source = local needs data.path"]),
    ({"data": {"source": "hub"}}, ["eval.select_by = gold needs the synthetic source"]),
    ({"engine": {"processes": 3}}, ["sft.batch_size 32 is not a multiple of micro_batch_size "
                                    "32 x 3 training process(es)"]),
    ({"sft": {"batch_size": 48}}, ["sft.batch_size 48 is not a multiple of micro_batch_size 32 "
                                   "x 1 training process(es)"]),
    ({"align": {"runs": {"exo-rw_nc2": {"loss": "exo-rw", "data": "rm_labels",
                                        "micro_batch_size": 24}}}},
     ["align.runs.exo-rw_nc2.batch_size 32 is not a multiple of micro_batch_size 24 x 1"]),
    ({"align": {"defaults": {"lerning_rate": 1e-4}}},
     ["align.defaults.lerning_rate: unknown key (did you mean 'lr'?)"]),
    ({"align": {"seeds": []}}, ["align.seeds: [] should be non-empty"]),
])
def test_the_dry_run_refuses_what_fails_late(overlay, needles):
    with pytest.raises(ConfigError) as e:
        check_config(merged(TINY, overlay))
    for n in needles:
        assert n in str(e.value), (n, str(e.value))


def test_a_bad_config_is_one_line_without_the_schema(tmp_path):
    """Through snakemake -n: the issue's rows (a typo key, num_contrastive 4 over 2 samples per
    prompt, eval.checkpoints 9 over 3), each one line and nothing else (no schema dump)."""
    from dataclasses import fields

    from exoflow.config import AlignParams

    wd = copy_workflow(tmp_path)
    keys = ", ".join(f.name for f in fields(AlignParams))
    for overlay, want in [
            ("align:\n  defaults:\n    lerning_rate: 1.0e-4\n",
             f"error: align.defaults.lerning_rate: unknown key (did you mean 'lr'?); the keys "
             f"of align.defaults are {keys}"),
            ("align:\n  defaults:\n    num_contrastive: 4\n",
             "error: align.defaults.num_contrastive (run exo-rw_nc2) = 4 does not divide the 2 "
             "candidates per prompt of its data rm_labels (sample.num_return = 2); set "
             "num_contrastive to a divisor of 2, or sample.num_return to a multiple of 4"),
            ("eval:\n  checkpoints: 9\n",
             "error: eval.checkpoints = 9 but run exo-rw_nc2 has 3 checkpoint(s) "
             "(align.runs.exo-rw_nc2: max_steps 60 / save_every 20); lower eval.checkpoints or "
             "save more often")]:
        (wd / "bad.yaml").write_text(overlay)
        proc = snakemake(wd, "eval_all", "-n", "--configfile", "configs/tiny.yaml", "bad.yaml")
        err = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()
               and not ln.startswith(("Using workflow", "Config file"))]
        assert proc.returncode != 0 and err == [want], err


# ---- readers name the file ----------------------------------------------------------------------


def test_a_lone_surrogate_in_raw_data_names_the_input_line(tmp_path):
    lines = [json.dumps({"chosen": f"\n\nHuman: Hi {i}\n\nAssistant: Hello",
                         "rejected": f"\n\nHuman: Hi {i}\n\nAssistant: Go"}) for i in range(20)]
    lines[12] = lines[12].replace("Hello", "Hel\\ud800lo")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "train.jsonl").write_text("\n".join(lines) + "\n")
    proc = script("preprocess", "--split", "train", "--data",
                  {"source": "local", "path": str(tmp_path / "raw")}, "--seed", 0,
                  "--pairs", tmp_path / "p.jsonl", "--stats", tmp_path / "s.json")
    one_line_error(proc, f"{tmp_path / 'raw' / 'train.jsonl'}:13: holds \\ud800, half of a "
                         "UTF-16 surrogate pair", "fix or remove that line of the raw data")
    assert "NaN" not in proc.stderr


@pytest.fixture()
def model_copy(base, tmp_path):
    return Path(shutil.copytree(base[1], tmp_path / "m"))


def _sample(model, prompts):
    return script("sample", "--model", model, "--prompts", prompts, "--samples",
                  model.parent / "s.jsonl", "--generation", {"num_return": 1, "max_new_tokens": 2},
                  "--seed", 0)


def test_a_cut_tokenizer_json_is_named_with_its_line(base, model_copy):
    t = model_copy / "tokenizer.json"
    t.write_text(t.read_text()[: len(t.read_text()) // 2])
    one_line_error(_sample(model_copy, base[2]), f"{t}:", "not valid JSON",
                   "delete the folder and run snakemake again")


def test_a_config_that_disagrees_with_the_weights_names_the_tensor(base, model_copy):
    c = model_copy / "config.json"
    cfg = json.loads(c.read_text())
    cfg["vocab_size"] = 512
    c.write_text(json.dumps(cfg))
    one_line_error(_sample(model_copy, base[2]), f"{model_copy / 'model.safetensors'}: tensor ",
                   "is [300, 64] but", "makes it [512, 64]", "config and the weights are of "
                   "different models")


# ---- degenerate labels ----------------------------------------------------------------------------


def _align(base, tmp_path, records, name):
    root, model, _, _ = base
    write_records(tmp_path / f"{name}.jsonl", records)
    from tests.helpers import align_params

    return script("train_align", "--policy", model, "--train", tmp_path / f"{name}.jsonl",
                  "--metrics", tmp_path / name / "metrics.json", "--work-dir", tmp_path / "w",
                  "--log-dir", tmp_path / "l", "--ref-code", None,
                  "--align", align_params(max_steps=2, save_every=2),
                  "--runtime", tiny_runtime(checkpoint_every=100))


def test_groups_without_signal_are_counted_warned_about_and_refused_when_all(base, tmp_path):
    recs = [{"prompt": r["prompt"], "completions": [r["chosen"], r["rejected"]],
             "rewards": [0.5, 0.5]} for r in make_records(16)]
    one_line_error(_align(base, tmp_path, recs, "ties"), "every group of 2 candidates has "
                   "equal rewards, so alignment has nothing to learn")
    for r in recs[:8]:
        r["rewards"] = [1.0, -1.0]
    proc = _align(base, tmp_path, recs, "half")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: 8 of 16 groups of 2 candidates" in proc.stderr
    m = read_json(tmp_path / "half" / "metrics.json")
    assert (m["groups"], m["degenerate_groups"]) == (16, 8)


# ---- no network: fail fast ----------------------------------------------------------------------


def test_a_hub_name_without_network_fails_in_seconds(base, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root, _, train, test = base
    t0 = time.time()
    proc = script("train_stage", "--stage", "sft", "--base", "EleutherAI/pythia-70m", "--train",
                  train, "--test", test, "--model", tmp_path / "o" / "config.json", "--metrics",
                  tmp_path / "o" / "metrics.json", "--work-dir", tmp_path / "w", "--log-dir",
                  tmp_path / "l", "--params", tiny_stage(), "--runtime", tiny_runtime(),
                  env={"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0"})
    one_line_error(proc, "cannot reach the Hugging Face hub to download 'EleutherAI/pythia-70m'")
    assert time.time() - t0 < 30
