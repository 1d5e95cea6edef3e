"""Sampling: turn cuts, seeds, order, left padding, early stopping, completion log-probs."""

import json
import random
from pathlib import Path

import pytest
import torch

from exoflow.config import GenerationParams, SampleParams
from exoflow.io import read_records, write_records
from exoflow.modeling import build_scratch_model, load_tokenizer, train_tokenizer
from exoflow.sampling import (
    TurnStop,
    _turn_end_tokens,
    cut_at_turn,
    sample_completions,
    sample_file,
)
from tests.helpers import script_module

pytestmark = pytest.mark.usefixtures("one_thread")
WORDS = "the cat dog sat on mat why how what is are you I can help with that sure no yes".split()
TINY = dict(hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=256)
ROOT = Path(__file__).resolve().parents[1]


def dialogue(rng, n_words):
    return "\n\nHuman: " + " ".join(rng.choice(WORDS) for _ in range(n_words)) + "\n\nAssistant:"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    rng = random.Random(0)
    texts = [dialogue(rng, rng.randint(3, 30)) + " Sure. Fine." for _ in range(200)]
    d = tmp_path_factory.mktemp("tok")
    train_tokenizer(texts, 300, d, model_max_length=2048)
    return d


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(str(tok_dir), padding_side="left")


@pytest.fixture(scope="module")
def lm(tok):
    return build_scratch_model(TINY, tok, seed=0).eval()


@pytest.fixture(scope="module")
def prompts():
    rng = random.Random(1)
    # very different lengths, so length sorting reorders them
    return [dialogue(rng, n) for n in (2, 40, 5, 25, 1, 60, 12)]


def kw(**over):
    d = dict(num_return=2, temperature=0.8, top_k=0, max_new_tokens=10, max_len=128,
             batch_size=3, seed=0, progress=False)
    d.update(over)
    return d


# ---- cut_at_turn -----------------------------------------------------------------------

def test_cut_at_next_human_turn():
    assert cut_at_turn(" Sure.\n\nHuman: more") == " Sure."


def test_no_cut_without_marker():
    assert cut_at_turn(" Sure. Human: no newlines\nAssistant: here") == \
        " Sure. Human: no newlines\nAssistant: here"


def test_cut_at_assistant_turn_and_first_marker_wins():
    assert cut_at_turn(" a\n\nAssistant: b\n\nHuman: c") == " a"
    assert cut_at_turn("\n\nHuman: at once") == ""


# ---- sample_completions ----------------------------------------------------------------

def test_seeded_reproducible_and_seed_dependent(lm, tok, prompts):
    a = sample_completions(lm, tok, prompts, **kw(num_return=3))
    b = sample_completions(lm, tok, prompts, **kw(num_return=3))
    c = sample_completions(lm, tok, prompts, **kw(num_return=3, seed=1))
    assert a == b
    assert a != c
    assert all(len(x) == 3 for x in a)
    assert any(len(set(x)) > 1 for x in a)  # the returns of a prompt are distinct draws


def test_samples_do_not_depend_on_batching_or_num_prompts(lm, tok, prompts):
    one = sample_completions(lm, tok, prompts, **kw(batch_size=1))
    many = sample_completions(lm, tok, prompts, **kw(batch_size=4))
    first = sample_completions(lm, tok, prompts[:3], **kw(batch_size=2))
    assert one == many
    assert first == one[:3]


@pytest.mark.parametrize("num_return", [2, 4])
def test_shared_prompt_cache_gives_the_same_samples(lm, tok, prompts, num_return):
    """Each prompt run once and its KV cache copied to its rows of a static cache = the same
    with a growing cache = each row run on its own with generate's cache (batches mix prompt
    lengths, so left padding is in the shared cache too)."""
    shared = sample_completions(lm, tok, prompts, **kw(num_return=num_return, batch_size=4))
    growing = sample_completions(lm, tok, prompts, **kw(num_return=num_return, batch_size=4,
                                                        static_cache=False))
    alone = sample_completions(lm, tok, prompts, **kw(num_return=num_return, batch_size=4,
                                                      share_prompt_cache=False))
    assert shared == growing == alone
    assert sum(len(c) for x in shared for c in x) > 20 * num_return  # real text, not empty


def test_prefill_groups_bound_the_padding():
    """Hand-worked: groups of the length-sorted prompts whose padded size stays within 1.25x
    of their real tokens (491 alone: 2 x 491 > 1.25 x 778; 287..161 together: 4 x 287 <=
    1.25 x 998, but not with 67; 27 and 18 together: 54 <= 56.25)."""
    from exoflow.sampling import prefill_groups

    lengths = [67, 287, 18, 491, 270, 161, 280, 27]
    groups = prefill_groups(lengths)
    assert [[lengths[i] for i in g] for g in groups] == [
        [491], [287, 280, 270, 161], [67], [27, 18]]
    assert sorted(i for g in groups for i in g) == list(range(8))


def test_shared_cache_of_prompts_of_very_different_lengths(lm, tok):
    """Prompts of 1 to ~100 tokens in one batch (several prefill groups, a one-token prompt
    with nothing to prefill): the same samples as each row run on its own."""
    ps = ["a", "\n\nHuman: hi\n\nAssistant:", "\n\nHuman: " + "tell me more " * 30 + "\n\nAssistant:",
          "\n\nHuman: " + "word " * 8 + "\n\nAssistant:"]
    lens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in ps]
    assert lens[0] == 1 and max(lens) > 60
    shared = sample_completions(lm, tok, ps, **kw(num_return=3, batch_size=4))
    alone = sample_completions(lm, tok, ps, **kw(num_return=3, batch_size=4, share_prompt_cache=False))
    assert shared == alone


def test_greedy_left_padding_matches_unpadded_generate(lm, tok, prompts):
    batched = sample_completions(lm, tok, prompts, **kw(temperature=0.0, batch_size=7))
    single = sample_completions(lm, tok, prompts, **kw(temperature=0.0, batch_size=1))
    assert batched == single
    for p, outs in zip(prompts, batched):  # reference: transformers, no padding at all
        ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
        ref = lm.generate(ids, max_new_tokens=10, do_sample=False, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
        assert outs == [cut_at_turn(tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True))] * 2


def test_sample_file_keeps_input_order(lm, tok, tok_dir, prompts, tmp_path):
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    recs = [{"prompt": p, "chosen": " yes", "rejected": " no"} for p in prompts]
    write_records(tmp_path / "pref.jsonl", recs)
    params = GenerationParams.from_dict({"num_return": 2, "temperature": 0.8, "top_k": 0,
                                         "max_new_tokens": 6, "max_prompt_len": 128, "batch_size": 3})
    sample_file(tmp_path / "lm", tmp_path / "pref.jsonl", tmp_path / "s.jsonl", params, seed=3)
    out = read_records(tmp_path / "s.jsonl")
    assert [r["prompt"] for r in out] == prompts
    assert all(set(r) == {"prompt", "completions"} and len(r["completions"]) == 2 for r in out)
    ref = sample_completions(lm, tok, prompts, **kw(max_new_tokens=6, seed=3, batch_size=7))
    assert [r["completions"] for r in out] == ref

    sample_file(tmp_path / "lm", tmp_path / "pref.jsonl", tmp_path / "s3.jsonl", params, seed=3,
                num_prompts=3)
    assert read_records(tmp_path / "s3.jsonl") == out[:3]


def test_a_seeded_subset_draws_what_the_whole_file_draws(lm, tok, prompts, tmp_path):
    """sample.max_prompts: the subset is drawn by the seed (the same one every time, another
    for another seed), kept in file order, and each prompt's samples are those it gets in the
    whole file (its random stream is its position in the file)."""
    from exoflow.sampling import subset_indices

    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    write_records(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    params = GenerationParams.from_dict({"num_return": 2, "max_new_tokens": 6, "batch_size": 3})
    sample_file(tmp_path / "lm", tmp_path / "in.jsonl", tmp_path / "all.jsonl", params, seed=3)
    sample_file(tmp_path / "lm", tmp_path / "in.jsonl", tmp_path / "sub.jsonl", params, seed=3,
                subset=3)
    whole, sub = read_records(tmp_path / "all.jsonl"), read_records(tmp_path / "sub.jsonl")
    ids = subset_indices(len(prompts), 3, 3)
    assert ids == sorted(ids) and len(set(ids)) == 3 and ids == subset_indices(7, 3, 3)
    assert sub == [whole[i] for i in ids]
    assert any(subset_indices(7, 3, s) != ids for s in range(4, 10))
    assert subset_indices(7, None, 3) == subset_indices(7, 9, 3) == list(range(7))


def test_params_refuse_unknown_keys():
    with pytest.raises(ValueError, match="sample.temprature: unknown key .did you mean "
                                         "'temperature'"):
        SampleParams.from_dict({"temprature": 0.8})
    with pytest.raises(ValueError, match="sample.temperature must be >= 0, got -1"):
        SampleParams.from_dict({"temperature": -1})
    with pytest.raises(ValueError, match="sample.num_prompts: unknown key"):
        SampleParams.from_dict({"num_prompts": 128})  # an eval key
    p = SampleParams.from_dict({"score_batch_size": 64, "num_return": 4})
    assert p.generation() == GenerationParams(num_return=4)


# ---- stopping --------------------------------------------------------------------------

def test_turn_stopper_fires_when_marker_completes(lm, tok):
    ends = _turn_end_tokens(tok, lm.config.vocab_size)
    prompt = tok("\n\nHuman: hi\n\nAssistant:", add_special_tokens=False)["input_ids"]
    gen = tok(" Sure.\n\nHuman: more", add_special_tokens=False)["input_ids"]
    stop = TurnStop(tok, ends, len(prompt))
    fired = [bool(stop(torch.tensor([prompt + gen[:k]]), None)[0]) for k in range(1, len(gen) + 1)]
    first = fired.index(True)
    assert tok.decode(gen[:first + 1]) == " Sure.\n\nHuman:"  # not earlier: the prompt's own
    assert not any(fired[:first])                              # markers do not count


@pytest.fixture(scope="module")
def parrot(tok):
    """A tiny LM overfitted to two dialogues: one writes the next Human turn, one ends in EOS."""
    torch.manual_seed(0)
    model = build_scratch_model(TINY, tok, seed=1)
    pa, pb = "\n\nHuman: hi\n\nAssistant:", "\n\nHuman: bye now\n\nAssistant:"
    seqs = [tok(pa + " Sure.\n\nHuman: more more more more more", add_special_tokens=False)["input_ids"],
            tok(pb + " Fine.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id] * 3]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = sum(model(input_ids=torch.tensor([s]), labels=torch.tensor([s])).loss for s in seqs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), [pa, pb]


def test_generation_stops_at_turn_and_eos(parrot, tok):
    model, ps = parrot
    calls = []
    h = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = sample_completions(model, tok, ps, **kw(num_return=2, temperature=0.8,
                                                     max_new_tokens=60, batch_size=2))
    finally:
        h.remove()
    assert out == [[" Sure.", " Sure."], [" Fine.", " Fine."]]
    n_turn = len(tok(" Sure.\n\nHuman:", add_special_tokens=False)["input_ids"])
    # one forward for the shared prompt cache, then one per generated token: the batch stopped
    # as soon as the last row ended
    assert len(calls) == 1 + n_turn


def test_without_stop_at_turn_the_next_turn_is_kept(parrot, tok, tmp_path):
    """stop_at_turn: false (the original's pipeline): only EOS or max_new_tokens end a
    completion, through sample_file's parameters as the rules pass them."""
    model, ps = parrot
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    write_records(tmp_path / "in.jsonl", [{"prompt": p} for p in ps])
    out = {}
    for stop in (True, False):
        params = GenerationParams.from_dict({"num_return": 2, "max_new_tokens": 60,
                                             "batch_size": 2, "stop_at_turn": stop})
        sample_file(tmp_path / "lm", tmp_path / "in.jsonl", tmp_path / f"{stop}.jsonl", params,
                    seed=0)
        out[stop] = [r["completions"] for r in read_records(tmp_path / f"{stop}.jsonl")]
    assert out[True] == [[" Sure.", " Sure."], [" Fine.", " Fine."]]
    assert all(c.startswith(" Sure.\n\nHuman: more") for c in out[False][0])
    assert out[False][1] == [" Fine.", " Fine."]  # EOS still ends a completion


def test_prompt_window_keeps_the_last_tokens(lm, tok, prompts, tmp_path):
    """max_prompt_len 12 (config.yaml's 312, small): the model sees the last 12 prompt tokens,
    checked against transformers' generate on exactly those tokens (greedy)."""
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    long = prompts[5]
    ids = tok(long, add_special_tokens=False)["input_ids"]
    assert len(ids) > 40
    write_records(tmp_path / "in.jsonl", [{"prompt": long}])
    params = GenerationParams.from_dict({"num_return": 1, "temperature": 0.0,
                                         "max_new_tokens": 8, "max_prompt_len": 12,
                                         "stop_at_turn": False})
    sample_file(tmp_path / "lm", tmp_path / "in.jsonl", tmp_path / "s.jsonl", params, seed=0)
    got = read_records(tmp_path / "s.jsonl")[0]["completions"][0]
    ref = lm.generate(torch.tensor([ids[-12:]]), max_new_tokens=8, do_sample=False,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    want = tok.decode(ref[0, 12:], skip_special_tokens=True)
    assert got == want
    full = lm.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert got != tok.decode(full[0, len(ids):], skip_special_tokens=True)  # the window matters


# ---- text_logps (the KL's log-probs) ------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_text_logps_matches_hand_loop(lm, tok, prompts, temperature):
    comps = [[" yes", " the cat sat on the mat"], [" no"], [" why"], [" sure that is", " a"],
             [" help"], [" I can"], [" what is"]]
    from exoflow.logps import text_logps

    got = text_logps(lm, tok, prompts, comps, max_len=256, max_gen_len=64, batch_size=3,
                     temperature=temperature)
    for p, cs, g in zip(prompts, comps, got):
        assert len(g) == len(cs)
        for c, v in zip(cs, g):
            pi = tok(p, add_special_tokens=False)["input_ids"]
            ri = tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids = torch.tensor([pi + ri])
            with torch.no_grad():
                lp = torch.log_softmax(lm(input_ids=ids).logits[0] / temperature, -1)
            hand = sum(lp[len(pi) + t - 1, r].item() for t, r in enumerate(ri))
            assert v == pytest.approx(hand, abs=1e-5)


# ---- CLI -------------------------------------------------------------------------------

def test_sample_cli(lm, tok, prompts, tmp_path, capsys):
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    write_records(tmp_path / "in.jsonl", [{"prompt": p} for p in prompts])
    section = {"num_return": 3, "temperature": 0.8, "top_k": 0, "max_new_tokens": 5,
               "max_prompt_len": 64, "batch_size": 2}
    cli = script_module("sample")
    cli.main(["--model", str(tmp_path / "lm"), "--prompts", str(tmp_path / "in.jsonl"),
              "--samples", str(tmp_path / "out.jsonl"), "--generation", json.dumps(section),
              "--num-prompts", "4", "--seed", "7", "--threads", "1"])
    out = read_records(tmp_path / "out.jsonl")
    assert [r["prompt"] for r in out] == prompts[:4]
    assert all(len(r["completions"]) == 3 for r in out)
    from exoflow.cli import run

    with pytest.raises(SystemExit):
        run(cli.main, ["--model", str(tmp_path / "lm"), "--prompts", str(tmp_path / "in.jsonl"),
                       "--samples", str(tmp_path / "x.jsonl"), "--generation", '{"topk": 3}',
                       "--seed", "1"])
    assert "error: --generation.topk: unknown key (did you mean 'top_k'?)" in \
        capsys.readouterr().err
