"""The Snakemake layer: config validation, lint, and the data stage run for real."""

import json

import jsonschema
import pytest
import yaml

from exoflow.io import read_records
from tests.helpers import ROOT, copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.e2e


def load(path):
    return yaml.safe_load((ROOT / path).read_text())


def merged(base, over):
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture(scope="module")
def schema():
    return load("schemas/config.schema.yaml")


@pytest.mark.parametrize("configfiles", [[], ["configs/tiny.yaml"], ["configs/tiny.yaml", "configs/tiny_hh.yaml"]])
def test_shipped_configs_validate(schema, configfiles):
    cfg = load("config.yaml")
    for f in configfiles:
        cfg = merged(cfg, load(f))
    jsonschema.validate(cfg, schema)


def test_unknown_key_and_wrong_type_are_refused(schema):
    cfg = load("config.yaml")
    bad = merged(cfg, {"data": {"max_trian": 3}})
    with pytest.raises(jsonschema.ValidationError, match="max_trian"):
        jsonschema.validate(bad, schema)
    with pytest.raises(jsonschema.ValidationError, match="'many' is not of type"):
        jsonschema.validate(merged(cfg, {"sft": {"epochs": "many"}}), schema)


def test_snakemake_refuses_bad_config_before_any_job(tmp_path):
    wd = copy_workflow(tmp_path)
    (wd / "bad.yaml").write_text("data:\n  max_trian: 3\n")
    proc = snakemake(wd, "data", "-n", "--configfile", "configs/tiny.yaml", "bad.yaml")
    assert proc.returncode != 0
    assert "error: data.max_trian: unknown key (did you mean 'max_train'?)" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_lint_is_clean(tmp_path):
    wd = copy_workflow(tmp_path)
    proc = snakemake(wd, "--lint", "--configfile", "configs/tiny.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Lints for" not in out, out


def test_data_stage_runs_once_and_reruns_precisely(tmp_path):
    wd = copy_workflow(tmp_path)
    proc = snakemake(wd, "data", "--configfile", "configs/tiny.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = wd / "results" / "tiny" / "data"
    pref = read_records(out / "pref" / "train.jsonl")
    p2r = read_records(out / "p2r" / "train.jsonl")
    assert len(pref) == len(p2r) > 0
    assert all(set(r) == {"prompt", "chosen", "rejected"} for r in pref)
    assert all(r["completions"] == [p["chosen"], p["rejected"]] and r["rewards"] == [1, 0] for r, p in zip(p2r, pref))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["train"]["kept"] == len(pref) and set(stats) == {"train", "test"}

    assert planned_jobs(snakemake(wd, "data", "-n", "--configfile", "configs/tiny.yaml")) == {}
    (wd / "more.yaml").write_text("data:\n  max_train: 100\n")
    jobs = planned_jobs(snakemake(wd, "data", "-n", "--configfile", "configs/tiny.yaml", "more.yaml"))
    assert jobs == {"preprocess": 1, "data_stats": 1, "pref_to_rewards": 1, "data": 1}


def test_local_source_through_snakemake(tmp_path, hh_sample):
    wd = copy_workflow(tmp_path)
    # No gold reward on real pairs: checkpoints are picked by RM reward (the dry run refuses gold).
    (wd / "local.yaml").write_text(f"data:\n  source: local\n  path: {hh_sample}\n"
                                   "eval:\n  select_by: reward\n")
    proc = snakemake(wd, "data", "--configfile", "configs/tiny.yaml", "local.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((wd / "results" / "tiny" / "data" / "stats.json").read_text())
    assert stats["train"]["read"] == 2000 and stats["test"]["read"] == 312
    assert stats["train"]["kept"] + sum(stats["train"]["dropped"].values()) == 2000
