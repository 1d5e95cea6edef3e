"""The rule files: every rule name Snakemake prints for a shipped config can be found by a plain
search of the rule files, rules/common.smk holds no planning logic, and every command a rule
runs is one its script's parser reads (the arguments are generated from it)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = "\n".join(p.read_text() for p in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))])


@pytest.mark.parametrize("configs", [[], ["configs/tiny.yaml"]], ids=["config.yaml", "tiny"])
def test_every_rule_name_is_found_in_the_rule_files(configs):
    args = [sys.executable, "-m", "snakemake", "--list-rules"]
    if configs:
        args += ["--configfile", *configs]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    names = [ln.split()[0] for ln in out.splitlines() if ln.strip() and not ln.startswith(" ")]
    assert "train_align_exo_rw_nc2" in names and "train_sft" in names and "study" in names
    for name in names:
        assert re.search(rf"\b{re.escape(name)}\b", SOURCES), f"{name}: not in the rule files"


def test_common_smk_holds_no_planning_logic():
    src = (ROOT / "rules" / "common.smk").read_text()
    functions = re.findall(r"^def (\w+)\(", src, re.M)
    # path helpers, the code hash of a script, the interpreter, input/params functions
    assert set(functions) <= {"relative", "python_command", "res", "log", "bench", "as_json",
                              "code_of", "run_script", "base_model_arg", "base_model_input",
                              "ckpt_model", "ckpt_step", "judge_inputs"}
    assert len(src.splitlines()) < 130


def test_the_deepspeed_config_is_an_input_of_the_jobs_it_configures():
    """Editing engine.deepspeed's JSON must re-run what it configures (it was a params path
    only, so an edited file re-ran nothing): it is an input of the training rules and of the
    reference cache, and of nothing else."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "eval_all", "-n", "--forceall",
                          "--configfile", "configs/tiny.yaml", "configs/tiny_2proc.yaml"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rules_with = set()
    rule = None
    for line in out.splitlines():
        m = re.match(r"^(?:local)?rule (\S+):$", line.strip())
        if m:
            rule = m.group(1)
        if line.strip().startswith("input:") and "configs/deepspeed/zero2.json" in line:
            rules_with.add(rule)
    assert rules_with == {"train_sft", "train_rm", "precompute_ref", "train_align_exo_rw_nc2",
                          "train_align_dpo_rw_nc2", "train_align_exo_pref_nc2",
                          "train_align_dpo_pref_nc2"}


SHIPPED = [[], ["configs/tiny.yaml"], ["configs/tiny.yaml", "configs/tiny_hh.yaml"],
           ["configs/tiny.yaml", "configs/study.yaml"], ["configs/tiny.yaml",
                                                        "configs/tiny_2proc.yaml"]]


@pytest.mark.parametrize("configs", SHIPPED, ids=lambda c: "+".join(Path(x).stem for x in c)
                         or "config.yaml")
def test_every_command_parses_with_its_scripts_parser(configs):
    """A forced dry run's commands, each parsed by the parser of the script it runs: every
    argument known, every required one given, every parameter section valid (a rule and its
    script cannot drift apart, and no config reaches a script it would refuse)."""
    import shlex

    from exoflow.cli import script_parser

    args = [sys.executable, "-m", "snakemake", "all", "study", "-n", "-p", "--forceall"]
    if configs:
        args += ["--configfile", *configs]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    seen = set()
    for line in out.splitlines():
        m = re.search(r"(workflow_scripts/(\w+)\.py) (.*?) > \S+ 2>&1$", line)
        if not m:
            continue
        words = shlex.split(m.group(3))
        parser = script_parser(ROOT / m.group(1))
        ns = parser.parse_args(words)  # SystemExit on an unknown or missing argument
        assert set(vars(ns)) >= set(parser.sources), m.group(2)
        if m.group(2) == "eval_checkpoint":  # only the keys it reads of eval, no defaults shown
            scoring = json.loads(words[words.index("--scoring") + 1])
            assert sorted(scoring) == ["max_prompt_len", "score_batch_size", "temperature"]
        seen.add(m.group(2))
    assert seen >= {"preprocess", "train_stage", "sample", "label_rewards", "precompute_ref",
                    "train_align", "eval_checkpoint", "eval_dataset", "summarize", "study"}
