"""What a configuration will cost on this machine, before it runs: ``python -m exoflow.estimate``.

    python -m exoflow.estimate --configfile configs/smol_hh.yaml my_overlay.yaml --cores 2

The estimate runs the workflow in the current folder, twice, on two probes of the configuration (every
stage, the configured model, the same batch shapes and lengths, a few steps and prompts:
:func:`probe_overlay`), each under ``results/<run_name>_estimate<s>/`` (deleted afterwards),
and reads Snakemake's benchmark file of every job (wall seconds, peak resident memory). The
data stage of the configuration itself runs first (its records are counted; it is part of the
real run and is kept). Each job's time is fitted as ``a + b × units`` through the two probes
(units: optimizer steps for training, prompts or records for sampling, scoring and the
reference log-probs, 1 for the rest) and projected to the planned units; its peak memory is
the larger of the two probes' (the batches have the real shapes; records held in memory grow
with the data, which this does not project).

What it does not see: GPU memory (Snakemake records host memory only), several processes
(``engine.gpus > 1`` is timed as the configuration launches it, on this machine), the SFT and
RM test evaluation beyond the probe's test prompts (part of ``a``), the judge, and jobs run in
parallel (the total is the sum of the jobs: the wall time with one job at a time, which is
how training jobs run, each taking every core).
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config.check import check_config
from .errors import ExoflowError
from .io import read_json
from .plan import Plan
from .resources import count_records, train_steps

__all__ = ["Projection", "fit", "job_units", "load_config", "probe_overlay", "project"]

SCALES = (1, 2)  # the two probes: a probe at scale s trains 2·s steps on s·batch records
SCHEDULE_KEYS = ("max_steps", "save_every", "saves_per_epoch", "checkpoints", "lr_horizon")


def _update(into: dict, other: dict) -> dict:
    """Snakemake's merge of config files: mappings merged key by key, anything else replaced."""
    for k, v in (other or {}).items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _update(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


def load_config(files, root: Path) -> dict:
    """``root``'s ``config.yaml`` updated with each of ``files`` in order, as
    ``--configfile`` does."""
    config: dict = {}
    for f in [root / "config.yaml", *map(Path, files)]:
        try:
            _update(config, yaml.safe_load(f.read_text()) or {})
        except OSError as e:
            raise ExoflowError(f"{f}: {e.strerror}") from None
    return config


def probe_overlay(config: dict, plan: Plan, scale: int) -> dict:
    """The config of probe ``scale`` (``plan``: ``config``'s): the same models, batch shapes
    and lengths, ``2·scale`` optimizer steps per training job (one checkpoint, evaluated),
    ``scale`` batches of prompts for each sampling job and of records for the reference
    log-probs, one seed, no judge."""
    cfg, c = plan.cfg, copy.deepcopy(config)
    runs = plan.align_runs()
    batches = [cfg.sft.batch_size, cfg.rm.batch_size, cfg.sample.batch_size,
               *(plan.run_params(r).batch_size for r in runs)]
    steps = 2 * scale
    c["run_name"] = f"{cfg.run_name}_estimate{scale}"
    c.setdefault("data", {}).update(max_train=scale * max(batches),
                                    max_test=2 * cfg.eval.batch_size)
    for section in ("sft", "rm"):
        c.setdefault(section, {})["max_steps"] = steps
    schedule = {"max_steps": steps, "save_every": steps, "saves_per_epoch": None,
                "checkpoints": None, "lr_horizon": "max_steps"}
    align = c.setdefault("align", {})
    align.setdefault("defaults", {}).update(schedule)
    for entry in (align.get("runs") or {}).values():
        if isinstance(entry, dict):
            entry.update({k: v for k, v in schedule.items() if k in entry})
    align["seeds"] = [cfg.seed]
    c.setdefault("sample", {})["max_prompts"] = scale * cfg.sample.batch_size
    c.setdefault("eval", {}).update(num_prompts=scale * cfg.eval.batch_size, val_prompts=0,
                                    checkpoints=1)
    c.setdefault("judge", {})["base_url"] = None
    return c


def job_units(plan: Plan, n_train: int, n_test: int) -> dict[tuple[str, str], tuple[str, float]]:
    """``{(rule, job): (unit, how many)}`` for every job of ``eval_all`` that the estimate
    projects; ``job`` is the benchmark file's name (``<run>/ckpt<k>`` for a checkpoint)."""
    cfg = plan.cfg
    n_sample = min(n_train, cfg.sample.max_prompts or n_train)
    n_eval = min(n_test, cfg.eval.num_prompts or n_test)
    records = {"p2r": n_train, "rm_labels": n_sample}

    units: dict[tuple[str, str], tuple[str, float]] = {
        ("train_sft", "bench"): ("steps", train_steps(cfg.sft, n_train)),
        ("train_rm", "bench"): ("steps", train_steps(cfg.rm, n_train)),
        ("eval_dataset", "bench"): ("prompts", n_eval),
        ("sample_checkpoint", "sft/ckpt0"): ("prompts", n_eval),
        ("eval_checkpoint", "sft/ckpt0"): ("prompts", n_eval),
        ("summarize", "bench"): ("job", 1),
    }
    runs = plan.align_runs()
    datas = {plan.run_params(r).data for r in runs}
    if "rm_labels" in datas:
        units[("sample_sft", "train")] = ("prompts", n_sample)
        units[("label_rewards", "train")] = ("prompts", n_sample)
    if "p2r" in datas:
        units[("pref_to_rewards", "train")] = ("records", n_train)
    for run in runs:
        if plan.precompute_ref():
            name = plan.ref_cache_name(run).removesuffix(".jsonl")
            units[("precompute_ref", name)] = ("records", records[plan.run_params(run).data])
        units[("train_align", run)] = ("steps", plan.run_params(run).max_steps)
        for k in plan.eval_checkpoints(run):
            units[("sample_checkpoint", f"{run}/ckpt{k}")] = ("prompts", n_eval)
            units[("eval_checkpoint", f"{run}/ckpt{k}")] = ("prompts", n_eval)
    for rule in ("init_base_model", "import_base_model", "train_tokenizer"):
        units[(rule, "bench")] = ("job", 1)
    return units


def read_benchmarks(results: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """``{(rule, job): (seconds, peak RSS MB)}`` from ``<results>/benchmarks/<rule>/<job>.tsv``."""
    out = {}
    for f in sorted((results / "benchmarks").rglob("*.tsv")):
        rel = f.relative_to(results / "benchmarks").with_suffix("")
        rule, job = rel.parts[0], "/".join(rel.parts[1:])
        with open(f) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows:
            rss = rows[-1].get("max_rss", "NA")
            out[(rule, job)] = (float(rows[-1]["s"]),
                                float(rss) if rss not in ("NA", "-", "") else math.nan)
    return out


def fit(u1: float, t1: float, u2: float, t2: float) -> tuple[float, float]:
    """``(a, b)`` of ``t = a + b·u`` through two probes; ``b ≥ 0`` and ``a ≥ 0`` (a probe
    that ran faster with more units is timing noise: the larger time, flat)."""
    if u2 == u1 or t2 <= t1:
        return max(t1, t2), 0.0
    b = (t2 - t1) / (u2 - u1)
    a = t1 - b * u1
    return (a, b) if a >= 0 else (0.0, t2 / u2)


def _probe_key(plan: Plan, rule: str, job: str) -> str:
    """The probe job that times ``job``: a run's configuration (the probes train one seed),
    its checkpoint 1 (the probes evaluate one)."""
    if rule in ("train_align", "sample_checkpoint", "eval_checkpoint") and job != "sft/ckpt0":
        run, _, ckpt = job.partition("/")
        conf = plan.run_configuration(run)
        return f"{conf}/ckpt1" if ckpt else conf
    return job


@dataclass
class Projection:
    rule: str
    jobs: int
    unit: str
    units: float  # per job (the largest)
    seconds: float  # all its jobs
    peak_mb: float  # the largest job's


def training_metrics(plan: Plan) -> dict[tuple[str, str], str]:
    """``{(rule, job): metrics.json}`` of the training jobs."""
    out = {("train_sft", "bench"): plan.res("models/sft/metrics.json"),
           ("train_rm", "bench"): plan.res("models/rm/metrics.json")}
    out.update({("train_align", r): plan.align_metrics(r) for r in plan.align_runs()})
    return out


def project(plan: Plan, n_train: int, n_test: int, probes: list[tuple[dict, dict]],
            step_seconds: dict | None = None) -> list[Projection]:
    """Each rule's projected seconds (all its jobs) and peak memory from two probes, each
    ``(units, benchmarks)`` as :func:`job_units` and :func:`read_benchmarks` give them. A
    training job's time is the second probe's less its steps, plus the planned steps at its
    median ``step_seconds`` (``{(rule, job): s}`` of the second probe, from metrics.json:
    steps are too short to time as a difference of two jobs' wall times)."""
    (units1, bench1), (units2, bench2) = probes
    step_seconds = step_seconds or {}
    rows: dict[str, Projection] = {}
    for (rule, job), (unit, n) in job_units(plan, n_train, n_test).items():
        key = (rule, _probe_key(plan, rule, job))
        if key not in bench1 or key not in bench2:
            continue  # not a job of this configuration (e.g. no tokenizer to train)
        u2, t2 = units2[key][1], bench2[key][0]
        if step_seconds.get(key):
            b = step_seconds[key]
            a = max(0.0, t2 - b * u2)
        else:
            a, b = fit(units1[key][1], bench1[key][0], u2, t2)
        row = rows.setdefault(rule, Projection(rule, 0, unit, 0, 0.0, 0.0))
        row.jobs += 1
        row.units = max(row.units, n)
        row.seconds += a + b * n
        row.peak_mb = max(row.peak_mb, bench1[key][1], bench2[key][1])
    return list(rows.values())


def _snakemake(root: Path, targets: list[str], files: list[str], cores: str) -> None:
    cmd = [sys.executable, "-m", "snakemake", *targets, "--cores", cores, "--configfile", *files]
    print("[exoflow] " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=root)
    if proc.returncode:
        raise ExoflowError(f"the probe run failed ({' '.join(cmd)}); its log says why")


def table(rows: list[Projection], measured: dict[str, float]) -> str:
    lines = [f"{'stage':<18} {'jobs':>4} {'units/job':>14} {'projected':>11} {'peak RSS':>9}"]
    for rule, s in measured.items():
        lines.append(f"{rule:<18} {'':>4} {'(ran)':>14} {_hms(s):>11} {'':>9}")
    for r in rows:
        lines.append(f"{r.rule:<18} {r.jobs:>4} {f'{r.units:g} {r.unit}':>14} "
                     f"{_hms(r.seconds):>11} {r.peak_mb:>6.0f} MB")
    total = sum(r.seconds for r in rows) + sum(measured.values())
    lines.append(f"{'total (one job at a time)':<38} {_hms(total):>11}")
    lines.append("sample_*, label_rewards, eval_checkpoint: upper bounds (the probes' models are "
                 "barely trained, so their samples run to max_new_tokens)")
    return "\n".join(lines)


def _hms(s: float) -> str:
    s = round(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m exoflow.estimate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", nargs="*", default=[], help="as snakemake's")
    ap.add_argument("--cores", default="all", help="as snakemake's (default: all)")
    ap.add_argument("--keep", action="store_true", help="keep the probes' results folders")
    args = ap.parse_args(argv)
    root = Path.cwd()
    if not (root / "Snakefile").exists():
        raise ExoflowError(f"{root}: no Snakefile; run the estimate in the workflow's folder")
    files = [str(Path(f).resolve()) for f in args.configfile]
    config = load_config(files, root)
    plan = check_config(copy.deepcopy(config))
    # the configuration's own data stage: its record counts (and a stage the run needs anyway)
    train, test = plan.res("data/pref/train.jsonl"), plan.res("data/pref/test.jsonl")
    _snakemake(root, [train, test], files, args.cores)
    n_train, n_test = count_records(root / train), count_records(root / test)
    measured = {f"preprocess ({s})": t for (r, s), (t, _) in
                read_benchmarks(root / plan.results).items() if r == "preprocess"}
    probes = []
    for scale in SCALES:
        overlay = probe_overlay(config, plan, scale)
        probe_plan = check_config(copy.deepcopy(overlay))
        out = root / probe_plan.results
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        overlay_file = out.parent / f"{out.name}.yaml"
        overlay_file.write_text(yaml.safe_dump(overlay, sort_keys=False))
        try:
            _snakemake(root, ["eval_all"], [*files, str(overlay_file)], args.cores)
            pt = count_records(root / probe_plan.res("data/pref/train.jsonl"))
            pe = count_records(root / probe_plan.res("data/pref/test.jsonl"))
            probes.append((job_units(probe_plan, pt, pe), read_benchmarks(out)))
            steps = {k: read_json(root / m).get("step_seconds")
                     for k, m in training_metrics(probe_plan).items() if (root / m).exists()}
        finally:
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
                overlay_file.unlink(missing_ok=True)
    rows = project(plan, n_train, n_test, probes, steps)
    print(f"\n{plan.cfg.run_name}: {n_train} train / {n_test} test records; projected from two "
          f"probes ({', '.join(f'{2 * s} steps' for s in SCALES)} per training job) on this "
          f"machine with --cores {args.cores}\n" + table(rows, measured))
    return 0


if __name__ == "__main__":
    from .cli import run

    run(main)
