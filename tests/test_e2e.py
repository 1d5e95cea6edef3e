"""The whole tiny DAG, from nothing to summary.csv, then Snakemake's precise re-runs.

One module-scoped run of `eval_all` on the tiny preset, made smaller (fewer pairs, steps and
eval prompts) so that it fits the default suite; `make tiny` runs the full preset.
"""

import csv
import json
import modulefinder
import re
import shutil

import pytest

from exoflow.io import read_records
from tests.helpers import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.e2e

RUNS = ["exo-rw_nc2", "dpo-rw_nc2", "exo-pref_nc2", "dpo-pref_nc2"]
QUICK = """
data:
  synthetic: {num_train: 600, num_test: 64}
sft: {epochs: 1, max_steps: 18}
rm: {epochs: 1}
sample: {max_new_tokens: 24}
align:
  defaults: {max_steps: 4, save_every: 2, batch_size: 16, micro_batch_size: 16}
eval: {num_prompts: 16, val_prompts: 8, max_new_tokens: 24, checkpoints: 2}
"""
CFG = ["--configfile", "configs/tiny.yaml", "quick.yaml"]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    wd = copy_workflow(tmp_path_factory.mktemp("e2e"))
    (wd / "quick.yaml").write_text(QUICK)
    proc = snakemake(wd, "eval_all", *CFG)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    (wd / "eval_all.stderr").write_text(proc.stderr)
    return wd


def test_eval_all_ends_saying_whether_the_rm_can_be_read(done):
    """The last lines of eval_all: the RM's test accuracy, its interval and the shorter-wins
    baseline, and whether the RM columns measure preference (summary.csv has the numbers)."""
    lines = [ln for ln in (done / "eval_all.stderr").read_text().splitlines()
             if ln.startswith("exoflow: results/tiny/summary.csv: RM test accuracy ")]
    assert len(lines) == 1, lines
    with open(done / "results" / "tiny" / "summary.csv") as f:
        row = next(csv.DictReader(f))
    acc, base = float(row["rm_test_accuracy"]), float(row["rm_shorter_wins_accuracy"])
    assert f"RM test accuracy {acc:.3f} [95 % " in lines[0] and f"vs {base:.3f} for" in lines[0]
    clears = float(row["rm_test_accuracy_ci95_low"]) > base
    assert lines[0].endswith("the RM beats that baseline") == clears, lines[0]


def dry(wd, *targets, extra=()):
    proc = snakemake(wd, *targets, "-n", *CFG, *extra)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return planned_jobs(proc)


def test_summary_table(done):
    out = done / "results" / "tiny"
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    keys = {(r["run"], r["ckpt"]) for r in rows}
    assert ("sft", "0") in keys and ("dataset-chosen", "") in {(r["run"], "") for r in rows}
    for run in RUNS:
        assert {(run, "1"), (run, "2")} <= keys
    sft = next(r for r in rows if r["run"] == "sft")
    assert float(sft["kl"]) == 0 and float(sft["win_rate"]) == 0.5 and sft["step"] == "0"
    for r in rows:
        if r["run"] in RUNS:
            assert r["step"] == str(2 * int(r["ckpt"]))
            lo, mean, hi = (float(r[k]) for k in ("reward_ci95_low", "reward_mean", "reward_ci95_high"))
            assert lo <= mean <= hi and 0 <= float(r["win_rate"]) <= 1
            assert r["gold_mean"] != ""  # synthetic source: the gold reward is known
            assert float(r["kl_exact"]) >= 0 and r["report_prompts"] == "8"
    for run in RUNS:  # one checkpoint per run picked on the 8 validation prompts
        assert sum(r["selected"] == "True" for r in rows if r["run"] == run) == 1
    assert float(sft["kl_exact"]) == 0 and sft["report_prompts"] == "8"
    assert (out / "summary.png").stat().st_size > 10_000


def test_stage_outputs(done):
    out = done / "results" / "tiny"
    labels = read_records(out / "data" / "rm_labels" / "train.jsonl")
    assert len(labels) == 600 and all(len(r["completions"]) == len(r["rewards"]) == 2 for r in labels)
    samples = read_records(out / "samples" / "exo-rw_nc2" / "ckpt2" / "test.jsonl")
    assert len(samples) == 16 and all(len(r["completions"]) == 4 for r in samples)
    rep = json.loads((out / "eval" / "exo-rw_nc2" / "ckpt2" / "reward.json").read_text())
    assert rep["reward"]["count"] == 64 and {"win_rate", "kl", "kl_exact", "gold"} <= set(rep)
    rm = json.loads((out / "models" / "rm" / "metrics.json").read_text())
    assert 0 <= rm["test_accuracy"] <= 1
    for rule in ("train_sft", "train_rm", "train_align"):
        assert list((out / "logs" / rule).rglob("*.log")), rule
    assert list((out / "benchmarks").rglob("*.tsv"))


def test_nothing_changed_nothing_to_do(done):
    assert dry(done, "eval_all") == {}


def test_comment_edit_reruns_nothing(done):
    cfg = done / "config.yaml"
    text = cfg.read_text()
    cfg.write_text(text.replace("# outputs go to results/<run_name>/", "# edited comment"))
    try:
        assert dry(done, "eval_all") == {}
    finally:
        cfg.write_text(text)


def _rule_scripts(wd) -> dict[str, str]:
    """rule -> the workflow script its command runs, read off a forced dry run's commands."""
    proc = snakemake(wd, "eval_all", "-n", "-p", "--forceall", *CFG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out, rule = {}, None
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(?:local)?rule (\S+):$", line.strip())
        if m:
            rule = m.group(1)
        m = re.search(r"workflow_scripts/(\w+)\.py", line)
        if m and rule:
            out[rule] = m.group(1)
    return out


def _job_graph(wd) -> tuple[dict[str, str], dict[str, set[str]]]:
    """(job -> its rule, job -> the jobs that consume its outputs), from Snakemake's --dag."""
    proc = snakemake(wd, "eval_all", "--dag", "--forceall", *CFG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rule = {n: label.split("\\n")[0]
            for n, label in re.findall(r'^\s*(\d+)\[label = "([^"]+)"', proc.stdout, re.M)}
    down = {n: set() for n in rule}
    for a, b in re.findall(r"^\s*(\d+) -> (\d+)", proc.stdout, re.M):
        down[a].add(b)
    return rule, down


def _downstream(jobs, down) -> set[str]:
    todo, seen = list(jobs), set(jobs)
    while todo:
        for nxt in down.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def module_name(path, package) -> str:
    """``exoflow.losses.exo`` of ``<package>/losses/exo.py`` (``exoflow.losses`` of its
    ``__init__.py``)."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def check_code_edits(done, modules) -> None:
    """A comment or docstring edit to every exoflow module (subpackages included) plans
    nothing; a behavioural edit to each of ``modules`` (paths relative to the workflow) plans
    exactly the rules whose scripts import it (transitively, per modulefinder, an
    implementation independent of exoflow.codehash) and the jobs that consume their outputs
    (Snakemake's job graph)."""
    scripts, (job_rule, down) = _rule_scripts(done), _job_graph(done)
    assert set(scripts) >= {"preprocess", "train_sft", "train_rm", "precompute_ref",
                            "train_align_exo_rw_nc2", "eval_checkpoint", "summarize"}
    reach = {}
    for rule, name in scripts.items():
        mf = modulefinder.ModuleFinder(path=[str(done)])
        mf.run_script(str(done / "workflow_scripts" / f"{name}.py"))
        reach[rule] = {m for m in mf.modules if m.startswith("exoflow")}
    package = done / "exoflow"
    texts = {m: m.read_text() for m in sorted(package.rglob("*.py"))}
    try:
        for m, text in texts.items():  # comments and docstrings, everywhere at once
            m.write_text(text.replace('"""', '"""Edited. ', 1) + "\n# an added comment\n")
        assert dry(done, "eval_all") == {}
        for m, text in texts.items():
            m.write_text(text)
        for m in modules:
            m = done / m
            name, text = module_name(m, package), texts[m]
            m.write_text(text + "\n_EXOFLOW_TEST_EDIT = 1\n")
            try:
                direct = {j for j, r in job_rule.items() if name in reach.get(r, ())}
                want = {job_rule[j] for j in _downstream(direct, down)}
                assert set(dry(done, "eval_all")) == want, name
                if name == "exoflow.align_data":  # the token layout of the reference cache
                    assert "precompute_ref" in want
                if name.startswith("exoflow.losses."):  # a loss re-runs alignment only
                    assert {r.split("_nc")[0] for r in want} <= {
                        "train_align_exo_rw", "train_align_dpo_rw", "train_align_exo_pref",
                        "train_align_dpo_pref", "sample_checkpoint", "eval_checkpoint",
                        "summarize", "eval_all"}, want
            finally:
                m.write_text(text)
    finally:
        for m, text in texts.items():
            m.write_text(text)
    assert dry(done, "eval_all") == {}


def test_code_edits_rerun_exactly_the_rules_that_reach_them(done):
    """Issue 11, on a sample of modules (every module: the slow test below): a leaf of the
    losses package, a module of the data stage that the reference cache reads (its token
    layout), a subpackage's __init__ and the config's validator, which every script reads."""
    check_code_edits(done, ["exoflow/losses/exo.py", "exoflow/align_data.py",
                            "exoflow/plan/__init__.py", "exoflow/config/fields.py"])


@pytest.mark.slow
def test_every_module_edit_reruns_exactly_the_rules_that_reach_it(done):
    """Issue 11 on every module of the package, subpackages included (2-3 minutes)."""
    check_code_edits(done, sorted(p.relative_to(done).as_posix()
                                  for p in (done / "exoflow").rglob("*.py")))


def test_copied_results_are_checked_against_the_plan(done, tmp_path):
    """Results copied into a fresh clone (no .snakemake/, times kept as cp -a keeps them) plan
    nothing; a schedule key of one run changed there re-makes that run's training and what
    reads it, the dry run naming the output, the key and both values: the checkpoint made at
    step 2 is never evaluated as the one of step 4 (each job's record, exoflow.provenance)."""
    other = copy_workflow(tmp_path)
    shutil.copytree(done / "results", other / "results")
    (other / "quick.yaml").write_text(QUICK)
    assert not (other / ".snakemake").exists()
    assert dry(other, "eval_all") == {}
    run = "align:\n  runs:\n    exo-rw_nc2: {loss: exo-rw, data: rm_labels, %s}\n"
    for key, change in (("save_every: 4", "align.save_every 2 -> 4"),
                        ("max_steps: 2", "align.max_steps 4 -> 2")):
        (other / "sched.yaml").write_text(run % key + "eval: {checkpoints: 1}\n")
        proc = snakemake(other, "eval_all", "-n", *CFG, "sched.yaml")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("exoflow: stale: results/tiny/models/align/exo-rw_nc2/metrics.json "
                f"(train_align_exo_rw_nc2): {change}; re-made") in proc.stderr
        jobs = planned_jobs(proc)
        assert jobs["train_align_exo_rw_nc2"] == 1, jobs
        assert not [j for j in jobs if j.startswith("train_align") and j.endswith("_nc2")
                    and j != "train_align_exo_rw_nc2"], jobs


def test_one_runs_lr_reruns_only_that_run(done):
    (done / "lr.yaml").write_text("align:\n  runs:\n    dpo-pref_nc2: {loss: dpo-pref, data: p2r, lr: 2.0e-4}\n")
    jobs = dry(done, "eval_all", extra=("lr.yaml",))
    assert jobs == {"train_align_dpo_pref_nc2": 1, "sample_checkpoint": 2, "eval_checkpoint": 2,
                    "summarize": 1, "eval_all": 1}


def test_sampling_temperature_reruns_sampling_and_downstream_only(done):
    (done / "temp.yaml").write_text("sample: {temperature: 0.7}\n")
    jobs = dry(done, "eval_all", extra=("temp.yaml",))
    assert jobs.get("sample_sft") == 1 and jobs.get("label_rewards") == 1
    assert jobs.get("train_align_exo_rw_nc2") == 1 and jobs.get("train_align_dpo_rw_nc2") == 1
    for untouched in ("train_sft", "train_rm", "train_tokenizer", "preprocess",
                      "train_align_exo_pref_nc2", "train_align_dpo_pref_nc2", "eval_dataset"):
        assert untouched not in jobs, jobs


def test_adding_a_seed_plans_only_that_seeds_jobs(done):
    """Issue 12: align.seeds [42] -> [42, 7] keeps every existing file (the top-level seed's
    runs keep their names) and plans the new seed's training, sampling and evaluation only."""
    (done / "seed.yaml").write_text("align:\n  seeds: [42, 7]\n")
    jobs = dry(done, "eval_all", extra=("seed.yaml",))
    assert jobs == {"train_align_exo_rw_nc2_s7": 1, "train_align_dpo_rw_nc2_s7": 1,
                    "train_align_exo_pref_nc2_s7": 1, "train_align_dpo_pref_nc2_s7": 1,
                    "sample_checkpoint": 8, "eval_checkpoint": 8, "summarize": 1,
                    "eval_all": 1}


def test_common_random_numbers(done):
    """Every checkpoint of every run (and the SFT model) is sampled on the same prompts with
    the same seed and sampling parameters, so sample j of prompt i comes from the same random
    stream (exoflow.sampling.stream_seed(seed, i, j)) in every run."""
    proc = snakemake(done, "eval_all", "-n", "-p", "--forceall", *CFG)
    args = re.findall(r"workflow_scripts/sample\.py --exoflow-code \S+ --model (\S+) --prompts "
                      r"(\S+) --generation ('[^']*') --seed (\d+) --num-prompts (\S+) --subset "
                      r"(\S+) --dtype (\S+) --threads (\d+) --samples (\S+)",
                      proc.stdout + proc.stderr)
    evals = [a for a in args if "/samples/" in a[8]]
    assert len(evals) == 1 + 4 * 2  # SFT + 4 runs x 2 checkpoints
    # prompts, sampling parameters, seed, prompt count, subset and precision: all equal
    assert len({(a[1], a[2], a[3], a[4], a[5], a[6]) for a in evals}) == 1


def test_deleted_eval_file_reruns_only_its_scoring(done):
    target = done / "results" / "tiny" / "eval" / "exo-pref_nc2" / "ckpt1" / "reward.json"
    target.unlink()
    jobs = dry(done, "eval_all")
    assert jobs == {"eval_checkpoint": 1, "summarize": 1, "eval_all": 1}
    proc = snakemake(done, str(target.relative_to(done)), *CFG)
    assert proc.returncode == 0 and target.exists()


def test_single_checkpoint_target(done):
    """With its checkpoint trained, one checkpoint's eval file needs exactly its sampling
    and its scoring."""
    for kind in ("samples", "eval"):
        shutil.rmtree(done / "results" / "tiny" / kind / "dpo-rw_nc2" / "ckpt2")
    target = "results/tiny/eval/dpo-rw_nc2/ckpt2/reward.json"
    assert dry(done, target) == {"sample_checkpoint": 1, "eval_checkpoint": 1}
    proc = snakemake(done, target, *CFG)
    assert proc.returncode == 0 and (done / target).exists()


def test_report_builds(done):
    proc = snakemake(done, "eval_all", "--report", "report.html", *CFG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (done / "report.html").read_text(errors="replace")
    assert "summary.png" in html and "summary.csv" in html


TWO_PROC = """
engine: {processes: 2, deepspeed: configs/deepspeed/zero2.json}
sft: {micro_batch_size: 16}
rm: {micro_batch_size: 16}
align:
  defaults: {micro_batch_size: 8}
"""


@pytest.mark.slow  # ~95 s; tests/test_multiprocess.py covers 2 processes in the default suite
def test_two_processes_with_zero2_through_the_rules(done, tmp_path):
    """engine.processes: 2 with DeepSpeed ZeRO-2 (configs/tiny_2proc.yaml's keys) through
    snakemake on this CPU: SFT, RM and an alignment run train in 2 torchrun processes (gloo),
    record world_size 2 and ZeRO stage 2, and their loss curves equal the 1-process,
    plain-PyTorch run's (same global batches and order) to 1e-4 at every step whose global
    batch is full (SFT stops at step 18, before its partial batch, so that both alignment
    runs start from the same SFT model). The last step of an epoch of 600 pairs in batches of 32 holds 24: one
    process trains on those 24, two fill each process's micro-batch of 16 by repeating 8 from
    the epoch's start (accelerate's even_batches, as the original's DistributedSampler pads),
    so that step differs (README, "Three ways to run")."""
    wd = copy_workflow(tmp_path)
    (wd / "quick.yaml").write_text(QUICK)
    (wd / "two.yaml").write_text(TWO_PROC)
    targets = ["results/tiny/models/sft/metrics.json", "results/tiny/models/rm/metrics.json",
               "results/tiny/models/align/exo-pref_nc2/metrics.json"]
    proc = snakemake(wd, *targets, *CFG, "two.yaml")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    for t in targets:
        two = json.loads((wd / t).read_text())
        one = json.loads((done / t).read_text())
        assert (two["run"]["world_size"], two["run"]["deepspeed_zero_stage"]) == (2, 2), t
        assert (one["run"]["world_size"], one["run"]["deepspeed_zero_stage"]) == (1, None), t
        assert two["run"]["gradient_accumulation_steps"] * 2 * (8 if "align" in t else 16) == \
            one["run"]["gradient_accumulation_steps"] * (16 if "align" in t else 32)
        c2, c1 = ([(e["step"], e["loss"]) for e in m["loss_curve"]] for m in (two, one))
        assert [s for s, _ in c2] == [s for s, _ in c1] != []
        batch = 16 if "align" in t else 32
        per_epoch = -(-one["num_train"] // batch)
        partial = {per_epoch * (e + 1) for e in range(9)} if one["num_train"] % batch else set()
        full = [(s, a, b) for (s, a), (_, b) in zip(c2, c1) if s not in partial]
        assert len(full) >= 4
        for s, a, b in full:
            assert a == pytest.approx(b, abs=1e-4), (t, s)


def test_judge_win_rates_through_the_rules(done, tmp_path):
    """judge_all against a real `transformers serve` endpoint, then the summary's columns: the
    served judge always answers "A" (tests/helpers.served_judge), so each prompt's two orders
    split (a tie), the win rate is 0.5 by hand and the first position wins every answer.
    Changing how requests are sent (concurrency) re-runs the judge jobs, which answer from the
    cache; nothing is asked twice."""
    import yaml

    from tests.helpers import served_judge

    with served_judge(tmp_path / "judge", biased=True) as endpoint:
        judge = dict(endpoint, checkpoints=[2], baselines=["sft"], num_prompts=4, max_tokens=1,
                     retries=1, backoff_s=0.05)
        (done / "judge.yaml").write_text(yaml.safe_dump({"judge": judge}))
        assert dry(done, "judge_all", extra=["judge.yaml"]) == {"judge_checkpoint": 4,
                                                                "judge_all": 1}
        proc = snakemake(done, "judge_all", "summarize", *CFG, "judge.yaml")
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
        out = done / "results" / "tiny"
        requests = 0
        for run in RUNS:
            s = json.loads((out / "judge" / run / "ckpt2" / "sft" / "win_rate.json").read_text())
            assert (s["prompts"], s["ties"], s["invalid"], s["win_rate"]) == (4, 4, 0, 0.5)
            assert s["first_position_wins"] == 1.0 and s["position_consistency"] == 0.0
            # two runs may sample the same reply to a prompt (the same seeds): its answer is
            # then asked once, by whichever job comes first
            assert s["requests"] + s["answers_from_cache"] == 8
            requests += s["requests"]
            recs = read_records(out / "judge" / run / "ckpt2" / "sft" / "judgements.jsonl")
            assert [r["index"] for r in recs] == [8, 9, 10, 11]  # after the 8 validation prompts
        # (two jobs asking the same answer at once both count it; the cache holds it once)
        assert 0 < len(list((out / "judge" / "cache").rglob("*.json"))) <= requests
        with open(out / "summary.csv") as f:
            rows = {(r["run"], r["ckpt"]): r for r in csv.DictReader(f)}
        for run in RUNS:
            assert float(rows[(run, "2")]["judge_vs_sft"]) == 0.5
            assert rows[(run, "1")]["judge_vs_sft"] == ""  # not judged
        judge["concurrency"] = 1
        (done / "judge.yaml").write_text(yaml.safe_dump({"judge": judge}))
        proc = snakemake(done, "judge_all", *CFG, "judge.yaml")
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
        for run in RUNS:
            s = json.loads((out / "judge" / run / "ckpt2" / "sft" / "win_rate.json").read_text())
            assert (s["requests"], s["answers_from_cache"], s["win_rate"]) == (0, 8, 0.5)
