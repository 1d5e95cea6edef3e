"""One home for every parameter (exoflow.config): the schema file is generated from it, its
bounds are the classes' own, every field is set from a config, every default is stated there
alone, and messages name the key (with the closest known one for a typo)."""

import ast
import copy
import subprocess
import sys
from dataclasses import MISSING, fields

import jsonschema
import pytest
import yaml

from exoflow import config as P
from exoflow.errors import ExoflowError, ParamsError
from exoflow.plan import Plan
from tests.helpers import ROOT

SCHEMA = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())


def test_schema_file_is_generated_from_the_params():
    out = subprocess.run([sys.executable, "-m", "exoflow.config.schema"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert (ROOT / "schemas" / "config.schema.yaml").read_text() == out, \
        "python -m exoflow.config.schema > schemas/config.schema.yaml"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_config_table_is_generated_from_the_schema():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_table.py")],
                         capture_output=True, text=True, check=True).stdout
    docs = (ROOT / "docs" / "CONFIG.md").read_text()
    start, end = "<!-- config-table: scripts/config_table.py -->\n", "<!-- /config-table -->"
    assert start in docs and end in docs
    assert docs.split(start, 1)[1].split(end, 1)[0] == out, \
        "docs/CONFIG.md's table differs: python scripts/config_table.py"


def test_every_field_has_help_and_every_loss_name_is_the_losses_table():
    from exoflow.losses import LOSSES

    loss = SCHEMA["properties"]["align"]["properties"]["defaults"]["properties"]["loss"]
    assert loss["oneOf"][0]["enum"] == list(LOSSES)
    for cls in LOSSES.values():
        assert cls.__doc__ and cls.NAME and cls.TARGET in ("rw", "pref"), cls
        for f in cls.own():
            assert f.metadata.get("help") and f.name in loss["oneOf"][1]["properties"], f.name
    for cls in [P.Config, P.DataParams, P.SyntheticParams, P.ModelParams, P.ScratchParams,
                P.LoraParams, P.EngineParams, P.SFTParams, P.AlignParams, P.AlignSection,
                P.SampleParams, P.EvalParams, P.StudyParams, P.Runtime]:
        for f in fields(cls):
            assert f.metadata.get("help"), (cls.__name__, f.name)


# ---- bounds: the schema and the classes accept and refuse the same values ------------------


def section_schema(path: str) -> dict:
    node = SCHEMA
    for key in path.split("."):
        node = node["properties"][key]
    return node["properties"]


def probes(p: dict) -> list:
    t = p.get("type")
    types = set(t if isinstance(t, list) else [t]) - {"null", None}
    if "enum" in p or types & {"boolean", "string", "array", "object"} or not types:
        return []
    ints = types == {"integer"}
    vals = {-1, 0, 1, 2, 3}
    if not ints:
        vals |= {-0.5, 0.5, 0.999, 1.5, -10.0}
    for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if k in p:
            b = p[k]
            vals |= {b, b + 1, b - 1} if ints else {b, b + 0.01, b - 0.01}
    return sorted(vals)


# Keys whose other bound is another key: probed with a partner that leaves only theirs.
PARTNERS = {
    "max_len": lambda v: {"max_gen_len": 1} if v > 1 else {},
    "max_gen_len": lambda v: {"max_len": v + 1} if isinstance(v, int) and v > 0 else {},
    "batch_size": lambda v: {"micro_batch_size": 1},
    "micro_batch_size": lambda v: {"batch_size": v} if isinstance(v, int) and v > 0 else {},
    "max_steps": lambda v: {"save_every": 1},
    "save_every": lambda v: {"max_steps": v} if isinstance(v, int) and v > 0 else {},
    "val_prompts": lambda v: {"num_prompts": None},
    # the original's checkpoints instead of save_every
    "saves_per_epoch": lambda v: {"save_every": None, "checkpoints": 1} if v is not None else {},
    "checkpoints": lambda v: {"save_every": None, "saves_per_epoch": 1} if v is not None else {},
}
EXEMPT = {("max_len", 1)}  # max_gen_len >= 1 leaves no room: refused by the class only
BASES = {"sft": CONFIG["sft"], "align.defaults": dict(
    CONFIG["align"]["defaults"], loss="exo-rw", data="rm_labels", save_every=1, max_steps=175,
    saves_per_epoch=None, checkpoints=None)}
SECTIONS = [("sft", P.SFTParams), ("align.defaults", P.AlignParams), ("engine", P.EngineParams),
            ("model.lora", P.LoraParams), ("sample", P.SampleParams), ("eval", P.EvalParams),
            ("data.synthetic", P.SyntheticParams), ("model.scratch", P.ScratchParams),
            ("data", P.DataParams), ("study", P.StudyParams)]
REQUIRED = {"model.scratch": {"hidden_size": 8, "num_layers": 1, "num_heads": 1},
            "data": {"source": "synthetic"}}


@pytest.mark.parametrize("path,cls", SECTIONS, ids=[s[0] for s in SECTIONS])
def test_bounds_agree(path, cls):
    props = section_schema(path)
    assert set(props) == {f.name for f in fields(cls)}
    checked = 0
    for key, prop in props.items():
        for v in probes(prop):
            if (key, v) in EXEMPT:
                continue
            schema_ok = jsonschema.Draft202012Validator(prop).is_valid(v)
            known = {f.name for f in fields(cls)}
            partner = {k: x for k, x in PARTNERS.get(key, lambda _: {})(v).items() if k in known}
            try:
                cls.from_dict({**BASES.get(path, REQUIRED.get(path, {})), **partner, key: v})
                ok = True
            except ExoflowError:
                ok = False
            assert schema_ok == ok, (path, key, v, schema_ok, ok)
            checked += 1
    assert checked >= 2


# ---- every field set from a config ---------------------------------------------------------

NON_DEFAULT = {
    "sft": dict(lr=2e-5, epochs=2, batch_size=12, micro_batch_size=3, warmup_ratio=0.1, max_len=300,
                max_gen_len=100, max_steps=7, adam_beta1=0.8, adam_beta2=0.9, weight_decay=0.01,
                lr_scheduler="linear", max_grad_norm=0.5, group_by_length=False,
                eos_after_cut=False),
    "engine": dict(deepspeed=str(ROOT / "configs" / "deepspeed" / "zero2.json"), gpus=3, processes=3, gradient_checkpointing=True,
                   num_threads=2, logging_steps=3, checkpoint_every=7),
    "lora": dict(rank=4, alpha=8.0, dropout=0.1, target_modules=["dense"]),
    "align": dict(loss="dpo-rw", data="p2r", lr=3e-6, batch_size=8, micro_batch_size=2,
                  max_steps=12, save_every=None, saves_per_epoch=5, checkpoints=2,
                  lr_horizon="epoch",
                  eos_after_cut=False, beta_r=0.3, beta_pi=0.2, temp=0.7,
                  pref_log_eps=-5.0, num_contrastive=4, warmup_steps=2, max_len=300,
                  max_gen_len=90, adam_beta1=0.8, adam_beta2=0.9, weight_decay=0.01,
                  lr_scheduler="linear", max_grad_norm=0.5, group_by_length=False),
    "eval": dict(num_return=3, temperature=0.6, top_k=5, max_new_tokens=30, max_prompt_len=128,
                 stop_at_turn=False,
                 batch_size=4, score_batch_size=6, num_prompts=9, checkpoints=2, val_prompts=3,
                 select_by="win_rate"),
}


# Keys that are the alternative of a key set above (save_every: the other way to place
# checkpoints, set from a config in tests/test_plan.py).
ALTERNATIVES = {("align", "save_every")}


def test_every_field_is_set_from_a_config():
    cfg = copy.deepcopy(CONFIG)
    cfg["sft"] = dict(NON_DEFAULT["sft"])
    cfg["rm"] = {k: v for k, v in NON_DEFAULT["sft"].items() if k != "eos_after_cut"}
    cfg["engine"] = dict(NON_DEFAULT["engine"])
    cfg["align"]["defaults"] = {k: v for k, v in NON_DEFAULT["align"].items()
                                if k not in ("loss", "data")}
    cfg["align"]["runs"] = {"r": {"loss": "dpo-rw", "data": "p2r"}}
    cfg["eval"] = dict(NON_DEFAULT["eval"])
    cfg["model"]["dtype"], cfg["seed"] = "fp16", 7
    cfg["model"]["lora"] = dict(NON_DEFAULT["lora"])
    cfg["study"] = {"compare": []}
    jsonschema.Draft202012Validator(SCHEMA).validate(cfg)
    plan = Plan(cfg)
    assert plan.cfg.sft.to_dict() == NON_DEFAULT["sft"]
    assert plan.cfg.rm.to_dict() == cfg["rm"]  # the RM reads no EOS
    rt = plan.runtime()
    assert rt.engine.to_dict() == NON_DEFAULT["engine"]
    assert (rt.dtype, rt.seed, rt.lora.to_dict()) == ("fp16", 7, NON_DEFAULT["lora"])
    assert plan.run_params("r").to_dict() == NON_DEFAULT["align"]
    assert plan.cfg.eval.to_dict() == NON_DEFAULT["eval"]
    g = plan.cfg.eval.generation()
    assert g.to_dict() == {k: NON_DEFAULT["eval"][k] for k in g.to_dict()}
    assert plan.eval_scoring() == {"max_prompt_len": 128, "score_batch_size": 6,
                                   "temperature": 0.6}
    assert plan.eval_checkpoints("r") == [1, 2]
    for section, cls in (("sft", P.SFTParams), ("align", P.AlignParams), ("lora", P.LoraParams),
                         ("engine", P.EngineParams), ("eval", P.EvalParams)):
        for f in fields(cls):
            d = f.default_factory() if f.default is MISSING and f.default_factory is not \
                MISSING else f.default
            if d is not MISSING and (section, f.name) not in ALTERNATIVES:
                assert NON_DEFAULT[section][f.name] != d, (section, f.name)


# ---- every default stated once ---------------------------------------------------------------

# Where config values are read: none of these may state a default of its own.
READERS = ["exoflow/plan/*.py", "exoflow/config/constraints.py", "exoflow/data.py", "exoflow/config/check.py", "rules/*.smk",
           "workflow_scripts/*.py", "Snakefile"]


def test_no_default_is_stated_outside_the_params():
    """No `.get(key, default)` on a config section and no argparse default other than None or
    an empty list in the readers of the config: every default lives in exoflow/config/."""
    found = []
    for pattern in READERS:
        for path in sorted(ROOT.glob(pattern)):
            text = path.read_text()
            for n, line in enumerate(text.splitlines(), start=1):
                if ".get(" in line and ("config" in line or "cfg" in line):
                    found.append(f"{path.name}:{n}: {line.strip()}")
            if path.suffix != ".py":
                continue
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Call) and any(k.arg == "default" for k in node.keywords):
                    d = next(k.value for k in node.keywords if k.arg == "default")
                    if not (isinstance(d, ast.Constant) and d.value is None) and \
                            not (isinstance(d, ast.List) and not d.elts):
                        found.append(f"{path.name}:{node.lineno}: a default {ast.unparse(d)}")
    assert not found, found


# ---- messages -----------------------------------------------------------------------------------


def test_messages_name_the_key_and_the_closest_known_one():
    with pytest.raises(ParamsError, match=r"^align.defaults.lerning_rate: unknown key \(did "
                                          r"you mean 'lr'\?\)"):
        Plan(dict(CONFIG, align=dict(CONFIG["align"], defaults=dict(
            CONFIG["align"]["defaults"], lerning_rate=1e-5))))
    with pytest.raises(ParamsError, match=r"^engine.gpu: unknown key \(did you mean 'gpus'\?\)"):
        P.Config.from_dict(dict(CONFIG, engine={"gpu": 2}))
    with pytest.raises(ParamsError, match=r"^model.dtype must be one of \['bf16', 'fp16', "
                                          r"'fp32'\], got 'bf61' \(did you mean 'bf16'\?\)"):
        P.Config.from_dict(dict(CONFIG, model=dict(CONFIG["model"], dtype="bf61")))
    with pytest.raises(ParamsError, match=r"^sft.epochs must be a number, got 'two'"):
        P.Config.from_dict(dict(CONFIG, sft=dict(CONFIG["sft"], epochs="two")))
    with pytest.raises(ParamsError, match=r"^align.runs.x.lr must be > 0, got 0"):
        Plan(dict(CONFIG, align=dict(CONFIG["align"], runs={"x": {"loss": "exo-rw",
                                                                  "data": "p2r", "lr": 0}})))
    with pytest.raises(ParamsError, match="must be a finite number"):
        P.SFTParams.from_dict(dict(CONFIG["sft"], lr=float("nan")))


# ---- align.defaults and align.runs: typed partial sections of one run ------------------------


def test_align_defaults_and_runs_are_typed_partial_sections_of_a_run():
    """Each key a config sets in align.defaults or a run's entry is checked as AlignParams
    checks it, the others stay unset (a run takes them from the defaults), a run's entry must
    name its loss and data, and the section written back is the config that was read."""
    cfg = P.Config.from_dict(CONFIG)
    run = cfg.align.runs["exo-rw_nc2"]
    assert isinstance(run, P.AlignRun) and isinstance(cfg.align.defaults, P.AlignDefaults)
    assert run.given() == CONFIG["align"]["runs"]["exo-rw_nc2"]
    assert run.lr is P.UNSET and cfg.align.defaults.lr == CONFIG["align"]["defaults"]["lr"]
    assert cfg.align.to_dict()["runs"] == CONFIG["align"]["runs"]
    assert cfg.align.to_dict()["defaults"] == CONFIG["align"]["defaults"]
    assert P.Config.from_dict(cfg.to_dict()) == cfg

    def refused(runs, message):
        bad = dict(CONFIG, align=dict(CONFIG["align"], runs=runs))
        with pytest.raises(ParamsError, match=message):
            P.Config.from_dict(bad)
        assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(bad)), runs

    refused({"x": {"loss": "exo-rw"}}, r"^align.runs.x: missing key\(s\) data$")
    refused({"x": 3}, r"^align.runs.x must be a mapping of its keys")
    refused({"a/b": {"loss": "exo-rw", "data": "p2r"}}, r"^align.runs: 'a/b' may hold letters")
    refused({"x": {"loss": "exo-rw", "data": "p2r", "num_contrastive": 1}},
            r"^align.runs.x.num_contrastive must be >= 2, got 1")
    refused({"x": {"loss": "exo-rw", "data": "p2r", "lr_horizon": "epochs"}},
            r"^align.runs.x.lr_horizon must be one of \['max_steps', 'epoch'\], got 'epochs' "
            r"\(did you mean 'epoch'\?\)")
    with pytest.raises(ParamsError, match=r"^align.defaults.temp must be > 0, got -1"):
        P.Config.from_dict(dict(CONFIG, align=dict(CONFIG["align"], defaults=dict(
            CONFIG["align"]["defaults"], temp=-1))))
