"""Reference log-probs computed once: equal to the on-the-fly ones, same training step, checked
against the run's settings."""

import json

import pytest
import torch

from exoflow.align import batch_loss, sequence_logps
from exoflow.align_data import AlignCollator, encode_align
from exoflow.io import read_records, write_records
from exoflow.modeling import load_causal_lm, load_tokenizer
from exoflow.refcache import (
    CHECKED,
    RefCacheError,
    load_ref_cache,
    precompute_ref,
    read_ref_cache,
)
from exoflow.schedule import Visits
from tests.helpers import align_params, k4_records, make_align_data, run_align, script_module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_align_data(tmp_path_factory.mktemp("refcache"))


def _load(tiny, **kw):
    p = align_params()
    args = dict(data_file=tiny.k4, reference=tiny.sft, temp=p.temp, max_len=p.max_len,
                max_gen_len=p.max_gen_len)
    args.update(kw)
    return load_ref_cache(tiny.cache, **args)


def test_cache_file_says_what_made_it(tiny):
    settings, rows = read_ref_cache(tiny.cache)
    assert set(CHECKED) <= set(settings)
    assert (settings["temp"], settings["max_len"], settings["max_gen_len"]) == (0.8, 64, 24)
    assert (settings["num_records"], settings["num_candidates"], settings["dtype"]) == (16, 4, "fp32")
    assert len(rows) == 16 and all(len(r) == 4 for r in rows)
    assert all(v < 0 for r in rows for v in r)


def test_cached_equal_on_the_fly(tiny):
    """Length-sorted cache batches vs the training batches' padding: same values in fp32."""
    cached = torch.tensor(_load(tiny))  # (16, 4)
    p = align_params()
    tok, model = load_tokenizer(tiny.sft), load_causal_lm(tiny.sft).eval()
    feats = encode_align(tok, read_records(tiny.k4), p.max_len, p.max_gen_len)
    collate = AlignCollator(tok.pad_token_id)
    with torch.no_grad():
        fly = torch.cat([sequence_logps(model, collate(feats[i:i + 3]), p.temp).view(-1, 4)
                         for i in range(0, 16, 3)])  # (16, 4)
    torch.testing.assert_close(cached, fly, rtol=0, atol=1e-5)
    assert cached.abs().min() > 1  # summed over several tokens, not trivially small


def test_one_step_same_loss_either_way(tiny):
    p = align_params(max_steps=1, save_every=1)
    tok, model = load_tokenizer(tiny.sft), load_causal_lm(tiny.sft)
    feats = encode_align(tok, read_records(tiny.k4)[:4], p.max_len, p.max_gen_len, _load(tiny)[:4])
    batch = AlignCollator(tok.pad_token_id)(feats)
    with torch.no_grad():
        a, ma = batch_loss(model, batch, p)
        del batch["ref_logps"]
        b, mb = batch_loss(model, batch, p, ref_model=load_causal_lm(tiny.sft).eval())
    assert a.item() == pytest.approx(b.item(), abs=1e-5)
    assert ma["logps/ref"].item() == pytest.approx(mb["logps/ref"].item(), abs=1e-5)

    # the same through the trainer: one optimizer step, cached vs reference model
    m1, d1 = run_align(tiny, "step_cached", p)
    m2, d2 = run_align(tiny, "step_model", p, ref_cache=None)
    assert (m1["ref_logps"], m2["ref_logps"]) == ("cache", "model")
    assert m1["loss_curve"][0]["loss"] == pytest.approx(m2["loss_curve"][0]["loss"], abs=1e-5)
    w1 = load_causal_lm(d1 / "out" / "ckpt1").state_dict()
    w2 = load_causal_lm(d2 / "out" / "ckpt1").state_dict()
    for name in w1:
        assert (w1[name] - w2[name]).abs().max().item() < 1e-5, name


def test_other_settings_are_refused(tiny, tmp_path):
    with pytest.raises(RefCacheError, match=r"temp: cache 0.8, run 1.0"):
        _load(tiny, temp=1.0)
    with pytest.raises(RefCacheError, match=r"max_gen_len: cache 24, run 32.*delete it"):
        _load(tiny, max_gen_len=32)
    other = tmp_path / "k4.jsonl"
    recs = k4_records()
    recs[3]["rewards"][0] = 9.0
    write_records(other, recs)
    with pytest.raises(RefCacheError, match="data_sha256"):
        _load(tiny, data_file=other)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(tiny.cache.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(RefCacheError, match="does not match its checksum.*cut short"):
        load_ref_cache(cut, tiny.k4, tiny.sft, 0.8, 64, 24)
    (tmp_path / "plain.jsonl").write_text(json.dumps([1.0, 2.0]) + "\n")
    with pytest.raises(RefCacheError, match="not a reference log-prob cache"):
        load_ref_cache(tmp_path / "plain.jsonl", tiny.k4, tiny.sft, 0.8, 64, 24)


def test_reference_runs_in_the_policys_precision():
    """fp32 as fp32; DeepSpeed converts the weights (no autocast), the Trainer autocasts (on
    the CPU as on a GPU)."""
    from pathlib import Path

    from exoflow.config import EngineParams, Runtime
    from exoflow.runtime import reference_precision

    def rt(dtype, **engine):
        return Runtime(engine=EngineParams(**engine), dtype=dtype)

    zero2 = str(Path(__file__).resolve().parents[1] / "configs" / "deepspeed" / "zero2.json")
    assert reference_precision(rt("bf16", gpus=0)) == ("fp32", "bf16")
    assert reference_precision(rt("fp32", gpus=1)) == ("fp32", None)
    assert reference_precision(rt("bf16", gpus=1)) == ("fp32", "bf16")
    assert reference_precision(rt("bf16", gpus=1, deepspeed=zero2)) == ("bf16", None)


def test_precompute_cli(tiny, tmp_path):
    cli = script_module("precompute_ref")
    out = tmp_path / "c.jsonl"
    cli.main(["--reference", str(tiny.sft), "--data", str(tiny.k4), "--cache", str(out),
              "--temp", "0.8", "--max-len", "64", "--max-gen-len", "24", "--eos", "1", "--batch-size", "5",
              "--runtime", "{}"])
    torch.testing.assert_close(torch.tensor(read_ref_cache(out)[1]),
                               torch.tensor(read_ref_cache(tiny.cache)[1]), rtol=0, atol=1e-5)


def _rewrite(path, settings, rows_text):
    """A cache with these row lines and a checksum that matches them (a forged file)."""
    import hashlib

    body = "".join(line + "\n" for line in rows_text).encode()
    head = json.dumps({"settings": settings, "content_sha256": hashlib.sha256(body).hexdigest()})
    path.write_bytes(head.encode() + b"\n" + body)


def test_cache_proves_its_content(tiny, tmp_path):
    """Issue 10: +5 on every value with the header left alone, a file cut mid-line, NaN, a
    short row: each is refused with one line naming the file (and line) and what to do."""
    lines = tiny.cache.read_text().splitlines()
    settings = json.loads(lines[0])["settings"]
    shifted = tmp_path / "shifted.jsonl"
    shifted.write_text("\n".join([lines[0]] + [json.dumps([v + 5 for v in json.loads(x)])
                                                for x in lines[1:]]) + "\n")
    with pytest.raises(RefCacheError, match=f"{shifted}: content does not match its checksum"):
        load_ref_cache(shifted, tiny.k4, tiny.sft, 0.8, 64, 24)
    midline = tmp_path / "midline.jsonl"
    text = tiny.cache.read_text()
    midline.write_text(text[: len(text) - 17])
    with pytest.raises(RefCacheError, match=f"{midline}: content does not match"):
        read_ref_cache(midline)
    bad = tmp_path / "nan.jsonl"
    rows = lines[1:]
    _rewrite(bad, settings, rows[:4] + ["[NaN, -1.0, -2.0, -3.0]"] + rows[5:])
    with pytest.raises(RefCacheError, match=rf"{bad}:6: NaN is not a finite number.*delete it"):
        load_ref_cache(bad, tiny.k4, tiny.sft, 0.8, 64, 24)
    _rewrite(bad, settings, rows[:2] + ["[-1.0, -2.0]"] + rows[3:])
    with pytest.raises(RefCacheError, match=rf"{bad}:4: 2 values for K=4 candidates"):
        load_ref_cache(bad, tiny.k4, tiny.sft, 0.8, 64, 24)
    _rewrite(bad, settings, rows[:2] + ['[-1.0, "x", -2.0, 0]'] + rows[3:])
    with pytest.raises(RefCacheError, match=rf"{bad}:4: expected a list of numbers"):
        read_ref_cache(bad)
    _rewrite(bad, settings, rows)  # the same rows with their checksum: accepted
    assert read_ref_cache(bad)[1] == read_ref_cache(tiny.cache)[1]


def test_cache_of_other_code_or_precision_is_refused(tiny, tmp_path):
    """A cache records the hash of the code that computed it (and the precision): a run that
    says which code it expects refuses a cache made by other code, naming both hashes."""
    from exoflow.refcache import write_ref_cache

    settings, rows = read_ref_cache(tiny.cache)
    stamped = tmp_path / "stamped.jsonl"
    write_ref_cache(stamped, dict(settings, code="aaaa"), rows)
    args = (tiny.k4, tiny.sft, 0.8, 64, 24)
    assert load_ref_cache(stamped, *args, code="aaaa", dtype="fp32") == rows
    with pytest.raises(RefCacheError, match=r"code: cache 'aaaa', run 'bbbb'.*delete it"):
        load_ref_cache(stamped, *args, code="bbbb")
    with pytest.raises(RefCacheError, match=r"code: cache None, run 'bbbb'"):
        load_ref_cache(tiny.cache, *args, code="bbbb")  # made without a code hash
    with pytest.raises(RefCacheError, match=r"dtype: cache 'fp32', run 'bf16'"):
        load_ref_cache(stamped, *args, dtype="bf16")


# ---- align.ref_records: visited -----------------------------------------------------------------
def _trained_records(data, params, cache, seed=42):
    """The record indices a real alignment run trains on (the first steps x accumulation
    micro-batches its collator makes: the Trainer may collate one more ahead)."""
    import exoflow.align as align_mod
    from exoflow.align_data import AlignCollator

    batches = []
    call, encode = AlignCollator.__call__, align_mod.AlignRecipe.encode

    def tagged_encode(self, records):
        feats = encode(self, records)
        for i, f in enumerate(feats):
            f["_i"] = i
        return feats

    def tagged_call(self, features):
        batches.append([f["_i"] for f in features])
        return call(self, [{k: v for k, v in f.items() if k != "_i"} for f in features])

    align_mod.AlignRecipe.encode, AlignCollator.__call__ = tagged_encode, tagged_call
    try:
        run_align(data, f"visits_{seed}_{params.group_by_length}", params, ref_cache=cache,
                  engine={"seed": seed})
    finally:
        align_mod.AlignRecipe.encode, AlignCollator.__call__ = encode, call
    accum = params.batch_size // params.micro_batch_size
    return sorted(i for b in batches[:params.max_steps * accum] for i in b)


@pytest.mark.parametrize("grouped", [False, True], ids=["random", "by-length"])
def test_a_visited_cache_holds_exactly_the_records_the_run_trains_on(tiny, tmp_path, grouped):
    """16 records, 4 per step, 3 steps: the run trains on 12; the cache made for its visits
    holds those 12 and only those, and the run reads it."""
    params = align_params(max_steps=3, save_every=3, group_by_length=grouped)
    visits = Visits(42, 3, 4, grouped)
    cache = tmp_path / "visited.jsonl"
    settings = precompute_ref(tiny.sft, tiny.k4, cache, params.temp, params.max_len,
                              params.max_gen_len, batch_size=8, progress=False, visits=visits)
    _, rows = read_ref_cache(cache)
    held = [i for i, r in enumerate(rows) if r is not None]
    assert settings["num_visited"] == len(held) == 12
    assert held == _trained_records(tiny, params, cache)
    # the values it holds are those of the whole cache
    _, full = read_ref_cache(tiny.cache)
    for i in held:
        assert rows[i] == pytest.approx(full[i], abs=1e-4)


def test_a_cache_made_for_other_visits_is_refused(tiny, tmp_path):
    params = align_params(max_steps=3, save_every=3)
    cache = tmp_path / "seed7.jsonl"
    precompute_ref(tiny.sft, tiny.k4, cache, params.temp, params.max_len, params.max_gen_len,
                   batch_size=8, progress=False, visits=Visits(7, 3, 4, True))
    with pytest.raises(RefCacheError, match="runs of v7s3b4g visit; this run is v0s3b4g"):
        run_align(tiny, "other_seed", params, ref_cache=cache)
    # a run past one epoch visits every record: the cache holds them all
    settings = precompute_ref(tiny.sft, tiny.k4, tmp_path / "all.jsonl", params.temp,
                              params.max_len, params.max_gen_len, batch_size=8, progress=False,
                              visits=Visits(0, 5, 4, False))
    assert settings["num_visited"] == 16


def test_visit_order_is_the_samplers():
    from exoflow.order import visit_order
    from exoflow.trainer import SeededLengthGroupedSampler, SeededRandomSampler

    lengths = [(7 * i) % 23 + 1 for i in range(40)]
    grouped = SeededLengthGroupedSampler(8, lengths, seed=3)
    grouped.set_epoch(1)
    assert list(grouped) == visit_order(40, 3, 8, lengths, epoch=1)
    randomly = SeededRandomSampler(40, seed=3)
    assert list(randomly) == visit_order(40, 3, 8, None) != list(range(40))
    assert sorted(visit_order(40, 3, 8, None)) == list(range(40))
