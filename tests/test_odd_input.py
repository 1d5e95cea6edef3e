"""Odd input through the real CLI: one line naming the key or file and what to do, never a
traceback; and input that is odd but fine (Windows line ends) read as it should be.

--config values, a run name that escapes its folder, a gzip file cut short, a model folder whose
tokenizer outruns its embedding, a base model that holds NaN.
"""

import gzip
import json
from collections import Counter

import pytest

from exoflow import hh
from tests.helpers import copy_workflow, make_pretrained, one_line_error, script, snakemake

TINY = ("--configfile", "configs/tiny.yaml")


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("odd"))


@pytest.mark.parametrize("value,needle", [
    ("align=abc", "error: align must be a mapping of its keys (align.<key>: <value>), got 'abc'"),
    ("eval={num_prompts: 16}",  # read as the integer it is: the next check speaks
     "error: eval.val_prompts = 128 leaves no report prompt of eval.num_prompts = 16"),
    ("eval={num_prompts: [1", "error: --config eval: '{num_prompts: [1' is not YAML"),
    ("run_name=..", "error: run_name: '..' names a folder of the path itself"),
    ("run_name=a/b", "error: run_name: 'a/b' may hold letters, digits, '.', '_' and '-' only"),
    ("align={runs: {..: {loss: exo-rw, data: rm_labels}}}",
     "error: align.runs: '..' names a folder of the path itself"),
])
def test_config_on_the_command_line_is_yaml_and_one_line(wf, value, needle):
    proc = snakemake(wf, "data", "-n", *TINY, "--config", value)
    line = one_line_error(proc)
    assert line.startswith(needle), line


def test_config_on_the_command_line_takes_numbers(wf):
    proc = snakemake(wf, "eval_all", "-n", *TINY, "--config",
                     "align={defaults: {lr: 2.0e-4, max_steps: 40}}",
                     "eval={num_prompts: 200, checkpoints: 2}")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_cut_gzip_file_is_named(tmp_path):
    data = tmp_path / "hh"
    data.mkdir()
    rows = [{"chosen": f"\n\nHuman: q{i}?\n\nAssistant: yes {i}",
             "rejected": f"\n\nHuman: q{i}?\n\nAssistant: no {i}"} for i in range(3000)]
    blob = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    (data / "train.jsonl.gz").write_bytes(blob[:len(blob) // 2])
    (data / "test.jsonl.gz").write_bytes(b"plain text, not gzip")
    section = json.dumps({"source": "local", "path": str(data)})
    for split, needle in (("train", "train.jsonl.gz is cut short after line "),
                          ("test", "test.jsonl.gz is not valid gzip")):
        proc = script("preprocess", "--data", section, "--split", split, "--seed", "1",
                      "--pairs", str(tmp_path / f"{split}.jsonl"),
                      "--stats", str(tmp_path / f"{split}.json"))
        one_line_error(proc, needle)


def test_a_tokenizer_larger_than_the_embedding_is_refused_by_the_dry_run(wf, tmp_path):
    model = make_pretrained(tmp_path / "m")
    cfg = json.loads((model / "config.json").read_text())
    n = len(json.loads((model / "tokenizer.json").read_text())["model"]["vocab"])
    cfg["vocab_size"] = n - 10
    (model / "config.json").write_text(json.dumps(cfg))
    proc = snakemake(wf, "data", "-n", *TINY, "--config", f"model={{init: {model}}}")
    one_line_error(proc, f"the tokenizer's ids go up to {n - 1}",
                   f"config.json's vocab_size is {n - 10}")


def test_nan_in_a_users_own_model_says_so(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from exoflow.errors import NonFiniteError
    from exoflow.modeling import load_causal_lm

    model = make_pretrained(tmp_path / "m")
    weights = model / "model.safetensors"
    state = load_file(weights)
    name = sorted(state)[0]
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(NonFiniteError, match=r"as given \(not a model exoflow trained\); fix or "
                                             r"fetch that checkpoint again \(model.init\)"):
        load_causal_lm(str(model))


def test_windows_line_ends_are_read_as_newlines():
    counts = Counter()
    crlf = "\r\n\r\nHuman: hi\r\nthere\r\n\r\nAssistant: yes"
    pair = hh.to_pair(crlf, crlf.replace("yes", "no"), counts)
    assert pair == {"prompt": "\n\nHuman: hi\nthere\n\nAssistant:", "chosen": " yes",
                    "rejected": " no"}
    assert counts == Counter(line_ends=1)
