"""One source for every parameter (issue 11): the config schema and the parameter dataclasses
agree in names, types, bounds and defaults; every field is set from a config; the README's
configuration table is the one generated from the schema's descriptions."""

import copy
import subprocess
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import jsonschema
import pytest
import yaml

from exoflow.align import AlignParams
from exoflow.engine import EngineParams, StageParams
from exoflow.errors import ExoflowError
from exoflow.evaluate import EvalParams
from exoflow.lora import LoraParams
from exoflow.plan import Plan
from exoflow.sampling import SampleParams

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
JSON_TYPES = {int: {"integer"}, float: {"number", "integer"}, bool: {"boolean"}, str: {"string"}}


def resolved(prop: dict) -> dict:
    """A property schema with its $ref merged in."""
    if "$ref" in prop:
        base = SCHEMA["definitions"][prop["$ref"].split("/")[-1]]
        return {**base, **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def props(definition: str) -> dict:
    return {k: resolved(v) for k, v in SCHEMA["definitions"][definition]["properties"].items()}


def engine_props() -> dict:
    return {k: resolved(v) for k, v in SCHEMA["properties"]["engine"]["properties"].items()}


def lora_props() -> dict:
    return {k: resolved(v) for k, v in SCHEMA["properties"]["model"]["properties"]["lora"]
            ["properties"].items()}


def dc_fields(cls, drop=()) -> dict:
    return {f.name: f for f in fields(cls) if f.name not in drop}


def py_types(f) -> tuple[set, bool]:
    """({JSON types}, nullable) of a dataclass field's annotation (a string here)."""
    ann = str(f.type).replace(" ", "")
    nullable = "None" in ann.split("|")
    names = [a for a in ann.split("|") if a != "None"]
    types = set()
    for n in names:
        if n == "list[str]":
            types |= {"array"}
            continue
        types |= JSON_TYPES[{"int": int, "float": float, "bool": bool, "str": str}[n]]
    return types, nullable


def schema_types(p: dict) -> tuple[set, bool]:
    if "enum" in p:
        return {"string"}, False
    t = p["type"] if isinstance(p["type"], list) else [p["type"]]
    return set(t) - {"null"}, "null" in t


SECTIONS = [  # (schema properties, dataclass fields, what)
    ("train_stage", lambda: props("train_stage"), lambda: dc_fields(StageParams)),
    ("align_params", lambda: props("align_params"), lambda: dc_fields(AlignParams)),
    ("engine", engine_props, lambda: dc_fields(EngineParams, drop=("dtype", "seed", "lora"))),
    ("lora", lora_props, lambda: dc_fields(LoraParams)),
]


@pytest.mark.parametrize("name,get_props,get_fields", SECTIONS, ids=[s[0] for s in SECTIONS])
def test_names_types_defaults_agree(name, get_props, get_fields):
    p, f = get_props(), get_fields()
    assert set(p) == set(f), f"{name}: schema only {set(p) - set(f)}, dataclass only {set(f) - set(p)}"
    for key in p:
        st, snull = schema_types(p[key])
        dt, dnull = py_types(f[key])
        assert st <= dt and snull == dnull, (name, key, st, snull, dt, dnull)
        if f[key].default is MISSING and f[key].default_factory is not MISSING:
            assert p[key].get("default") == f[key].default_factory(), (name, key)
        elif f[key].default is MISSING:
            assert "default" not in p[key], (name, key, "required in the dataclass")
        else:
            assert p[key].get("default", "<none>") == f[key].default, (name, key)
        assert p[key].get("description"), (name, key, "no description")


def test_generation_sections_agree_with_sample_and_eval_params():
    p = props("generation")
    sample, ev = dc_fields(SampleParams), dc_fields(EvalParams, drop=("rm_max_len", "rm_max_gen_len"))
    # exoflow.plan: which checkpoints are evaluated, and how the prompts are split
    workflow_only = {"checkpoints", "val_prompts", "select_by"}
    assert set(p) == set(sample) | set(ev) | workflow_only
    assert set(p) == set(sample) | SampleParams.TOLERATED
    assert set(p) <= set(ev) | EvalParams.TOLERATED
    for key, f in {**sample, **ev}.items():
        st, snull = schema_types(p[key])
        dt, dnull = py_types(f)
        assert st <= dt and snull == dnull, key
        assert p[key]["default"] == f.default, key
    assert all(v.get("description") for v in p.values())


# ---- bounds: the schema and the dataclass accept and refuse the same values -----------------

def _stage(**kw):
    return StageParams.from_dict({**CONFIG["sft"], **kw})


def _align(**kw):
    return AlignParams.from_dict({**CONFIG["align"]["defaults"], "loss": "exo-rw",
                                  "data": "rm_labels", **kw})


def _engine(**kw):
    return EngineParams.from_dict({"deepspeed": None, **kw})


def _lora(**kw):
    return LoraParams.from_dict(kw)


def _sample(**kw):
    return SampleParams.from_dict(kw)


def _eval(**kw):
    return EvalParams.from_dict({**kw, "rm_max_len": 512, "rm_max_gen_len": 200})


# Keys whose other bound is another key: probe them with a partner that leaves only theirs.
PARTNERS = {
    "max_len": lambda v: {"max_gen_len": 1} if v > 1 else {},
    "max_gen_len": lambda v: {"max_len": v + 1} if isinstance(v, int) and v > 0 else {},
    "batch_size": lambda v: {"micro_batch_size": 1},
    "micro_batch_size": lambda v: {"batch_size": v} if isinstance(v, int) and v > 0 else {},
    "max_steps": lambda v: {"save_every": 1},
    "save_every": lambda v: {"max_steps": v} if isinstance(v, int) and v > 0 else {},
}
EXEMPT = {("max_len", 1)}  # max_gen_len >= 1 leaves no room: refused by the dataclass only


def probes(p: dict) -> list:
    if "enum" in p or schema_types(p)[0] & {"boolean", "string", "array"}:
        return []
    ints = "integer" in schema_types(p)[0] and "number" not in schema_types(p)[0]
    vals = {-1, 0, 1, 2, 3}
    if not ints:
        vals |= {-0.5, 0.5, 0.999, 1.5, -10.0}
    for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if k in p:
            b = p[k]
            vals |= {b, b + 1, b - 1} if ints else {b, b + 0.01, b - 0.01}
    return sorted(vals)


BUILDERS = [("train_stage", props, _stage, StageParams),
            ("align_params", props, _align, AlignParams),
            ("engine", lambda _: engine_props(), _engine, EngineParams),
            ("lora", lambda _: lora_props(), _lora, LoraParams),
            ("generation", props, _sample, SampleParams),
            ("generation", props, _eval, EvalParams)]


@pytest.mark.parametrize("definition,get,build,cls", BUILDERS,
                         ids=["sft/rm", "align", "engine", "lora", "sample", "eval"])
def test_bounds_agree(definition, get, build, cls):
    p = get(definition)
    known = {f.name for f in fields(cls)}
    checked = 0
    for key, prop in p.items():
        if key not in known:
            continue
        for v in probes(prop):
            if (key, v) in EXEMPT:
                continue
            schema_ok = jsonschema.Draft202012Validator(prop).is_valid(v)
            try:
                partner = PARTNERS.get(key, lambda _: {})(v)
                build(**{key: v, **{k: x for k, x in partner.items() if k in known}})
                dc_ok = True
            except (ExoflowError, ValueError):
                dc_ok = False
            assert schema_ok == dc_ok, (definition, key, v, schema_ok, dc_ok)
            checked += 1
    assert checked >= (9 if definition != "lora" else 3)  # every numeric key, at and around its bounds


# ---- every field set from a config --------------------------------------------------------

NON_DEFAULT = {
    "sft": dict(lr=2e-5, epochs=2, batch_size=12, micro_batch_size=3, warmup_ratio=0.1, max_len=300,
                max_gen_len=100, max_steps=7, adam_beta1=0.8, adam_beta2=0.9, weight_decay=0.01,
                lr_scheduler="linear", max_grad_norm=0.5, group_by_length=False),
    "engine": dict(deepspeed=None, gpus=3, processes=3, gradient_checkpointing=True,
                   num_threads=2, logging_steps=3, checkpoint_every=7),
    "lora": dict(rank=4, alpha=8.0, dropout=0.1, target_modules=["dense"]),
    "align": dict(loss="dpo-rw", data="p2r", lr=3e-6, batch_size=8, micro_batch_size=2,
                  max_steps=12, save_every=4, beta_r=0.3, beta_pi=0.2, temp=0.7,
                  pref_log_eps=-5.0, num_contrastive=4, warmup_steps=2, max_len=300,
                  max_gen_len=90, adam_beta1=0.8, adam_beta2=0.9, weight_decay=0.01,
                  lr_scheduler="linear", max_grad_norm=0.5, group_by_length=False),
    "eval": dict(num_return=3, temperature=0.6, top_k=5, max_new_tokens=30, max_len=128,
                 batch_size=4, score_batch_size=6, num_prompts=9, checkpoints=2),
}


def test_every_field_is_set_from_a_config():
    cfg = copy.deepcopy(CONFIG)
    cfg["sft"] = dict(NON_DEFAULT["sft"])
    cfg["rm"] = dict(NON_DEFAULT["sft"])
    cfg["engine"] = dict(NON_DEFAULT["engine"])
    cfg["align"]["defaults"] = {k: v for k, v in NON_DEFAULT["align"].items()
                                if k not in ("loss", "data")}
    cfg["align"]["runs"] = {"r": {"loss": "dpo-rw", "data": "p2r"}}
    cfg["eval"] = dict(NON_DEFAULT["eval"])
    cfg["model"]["dtype"], cfg["seed"] = "fp16", 7
    cfg["model"]["lora"] = dict(NON_DEFAULT["lora"])
    jsonschema.Draft202012Validator(SCHEMA).validate(cfg)
    plan = Plan(cfg)
    for stage in ("sft", "rm"):
        assert StageParams.from_dict(cfg[stage]).to_dict() == NON_DEFAULT["sft"]
    eng = EngineParams.from_dict(plan.engine_params()).to_dict()
    assert eng == {**NON_DEFAULT["engine"], "dtype": "fp16", "seed": 7, "lora": NON_DEFAULT["lora"]}
    assert LoraParams.from_dict(eng["lora"]).to_dict() == NON_DEFAULT["lora"]
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory()
                for f in fields(LoraParams)}
    assert all(NON_DEFAULT["lora"][k] != d for k, d in defaults.items())
    assert AlignParams.from_dict(plan.run_params("r")).to_dict() == NON_DEFAULT["align"]
    s = SampleParams.from_dict(plan.eval_sample_params())
    assert {k: getattr(s, k) for k in dc_fields(SampleParams)} == {
        k: NON_DEFAULT["eval"][k] for k in dc_fields(SampleParams)}
    e = EvalParams.from_dict({**plan.eval_score_params(), "rm_max_len": 64, "rm_max_gen_len": 8})
    assert (e.max_len, e.score_batch_size) == (128, 6)
    assert plan.eval_checkpoints("r") == [1, 2]
    defaults = {f.name: f.default for f in fields(StageParams)}
    assert all(NON_DEFAULT["sft"][k] != d for k, d in defaults.items() if d is not MISSING)
    defaults = {f.name: f.default for f in fields(AlignParams)}
    assert all(NON_DEFAULT["align"][k] != d for k, d in defaults.items() if d is not MISSING)


def test_readme_table_is_generated_from_the_schema():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_table.py")],
                         capture_output=True, text=True, check=True).stdout
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- config-table: scripts/config_table.py -->\n", "<!-- /config-table -->"
    assert start in readme and end in readme
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == out, "README's config table differs: python scripts/config_table.py"
