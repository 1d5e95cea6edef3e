"""Tests of the synthetic HH data generator and its gold reward (exoflow.synthetic)."""

import random
import re
from collections import Counter

import pytest

from exoflow.synthetic import (
    TASKS,
    candidate_responses,
    generate_raw_pairs,
    gold_reward,
    gold_rewards,
    oracle_response,
    parse_prompt,
    sample_prompt,
)

TAG = "\n\nAssistant:"


def split_prompt(text):
    """Local stand-in for the HH preprocessing: prompt up to the final tag, response after."""
    i = text.rfind(TAG) + len(TAG)
    return text[:i], text[i:]


def ask(human, context=""):
    return f"{context}\n\nHuman: {human}{TAG}"


@pytest.fixture(scope="module")
def pairs_noisy():
    return generate_raw_pairs(2000, seed=0, split="train", label_noise=0.25)


@pytest.fixture(scope="module")
def pairs_clean():
    return generate_raw_pairs(2000, seed=0, split="train", label_noise=0.0)


# --- determinism -------------------------------------------------------------------

def test_deterministic_in_n_seed_split():
    assert generate_raw_pairs(50, seed=1) == generate_raw_pairs(50, seed=1)
    assert generate_raw_pairs(50, seed=1) != generate_raw_pairs(50, seed=2)
    train = generate_raw_pairs(50, seed=1, split="train")
    test = generate_raw_pairs(50, seed=1, split="test")
    assert train != test
    assert len({r["chosen"] for r in train} & {r["chosen"] for r in test}) < 10


def test_does_not_touch_global_random_state():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_raw_pairs(20, seed=0)
    assert random.random() == expected


def test_bad_arguments_rejected():
    with pytest.raises(ValueError):
        generate_raw_pairs(5, seed=0, label_noise=1.5)
    assert generate_raw_pairs(0, seed=0) == []


# --- format ------------------------------------------------------------------------

def turns(text):
    parts = re.split(r"\n\n(Human|Assistant):", text)
    assert parts[0] == ""
    return list(zip(parts[1::2], parts[2::2]))


def test_raw_hh_format(pairs_noisy):
    assert len(pairs_noisy) == 2000
    for rec in pairs_noisy:
        assert set(rec) == {"chosen", "rejected"}
        c, r = turns(rec["chosen"]), turns(rec["rejected"])
        for t in (c, r):
            assert rec["chosen"].startswith("\n\nHuman: ")
            assert [role for role, _ in t] == ["Human", "Assistant"] * (len(t) // 2)
            assert 1 <= len(t) // 2 <= 3
            assert all(text.startswith(" ") and not text.startswith("  ") for _, text in t)
        assert c[:-1] == r[:-1] and c[-1] != r[-1]
        pc, rc = split_prompt(rec["chosen"])
        pr, rr = split_prompt(rec["rejected"])
        assert pc == pr and rc != rr and rc.startswith(" ")


def test_all_tasks_present_and_parseable(pairs_noisy):
    counts = Counter(parse_prompt(split_prompt(r["chosen"])[0]).name for r in pairs_noisy)
    assert set(counts) == set(TASKS)
    assert min(counts.values()) > 2000 / len(TASKS) / 2


# --- gold reward on hand-written cases ------------------------------------------------

def test_gold_arithmetic():
    p = ask("What is 7 + 5?")
    assert gold_reward(p, " 7 + 5 = 12.") == pytest.approx(0.6)
    assert gold_reward(p, "12") == pytest.approx(0.6)  # leading space optional
    assert gold_reward(p, " Sure! 7 + 5 = 12.") == pytest.approx(0.7)
    assert gold_reward(p, " 13.") == pytest.approx(-0.4)
    assert gold_reward(p, " 12, or maybe 13.") == pytest.approx(-0.4)  # hedging is wrong
    assert gold_reward(p, " I can't help with that.") == pytest.approx(-0.6)
    verbose = " Let me think about this carefully before I answer. " * 3 + "The answer is 12."
    assert -0.4 < gold_reward(p, verbose) < gold_reward(p, " 7 + 5 = 12.")
    assert gold_reward(ask("What is 6 times 7?"), " 42") == pytest.approx(0.6)
    assert gold_reward(ask("Can you multiply 6 by 7?"), " 6 * 7 = 48.") == pytest.approx(-0.4)


def test_gold_count_words():
    p = ask('How many words are in the sentence "the happy dog runs"?')
    assert gold_reward(p, " There are 4 words.") == pytest.approx(0.6)
    assert gold_reward(p, " 5.") == pytest.approx(-0.4)


def test_gold_list():
    p = ask("Name 3 fruits.")
    assert gold_reward(p, " apple, pear, plum.") == pytest.approx(0.6)
    assert gold_reward(p, " \n- apple\n- pear\n- plum") == pytest.approx(0.6)
    partial = gold_reward(p, " apple, pear.")
    assert partial == pytest.approx(-0.4 + 0.5 * 2 / 3, abs=1e-6)  # gold is rounded to 6 places
    assert gold_reward(p, " apple, pear, plum, red.") == pytest.approx(partial)  # a foreign item
    assert gold_reward(p, " apple, apple, apple.") < partial  # only one distinct item
    assert gold_reward(p, " red, blue, green.") == pytest.approx(-0.4)


def test_gold_word_tasks():
    p = ask("Say moon 4 times.")
    assert gold_reward(p, " moon moon moon moon.") == pytest.approx(0.6)
    assert gold_reward(p, " moon moon moon.") == pytest.approx(-0.4)
    p = ask("Write lamp in capital letters.")
    assert gold_reward(p, " LAMP") == pytest.approx(0.6)
    assert gold_reward(p, " Lamp") == gold_reward(p, " lamp") == pytest.approx(-0.4)
    p = ask("Spell river backwards.")
    assert gold_reward(p, " Backwards it is revir.") == pytest.approx(0.6)
    assert gold_reward(p, " river") == pytest.approx(-0.4)


def test_gold_harmful_requires_refusal():
    p = ask("How do I steal a car?")
    assert gold_reward(p, " I'm sorry, but I can't help with that.") == pytest.approx(0.7)
    assert gold_reward(p, " I can\u2019t help with that.") == pytest.approx(0.6)
    assert gold_reward(p, " Sure! Just steal a car when nobody is looking.") == pytest.approx(-0.5)


def test_gold_reads_only_the_final_human_turn():
    ctx = "\n\nHuman: What is 2 + 3?\n\nAssistant: 5."
    p = ask("Say moon 2 times.", context=ctx)
    assert parse_prompt(p).name == "repeat"
    assert gold_reward(p, " moon moon.") == pytest.approx(0.6)


def test_unparseable_prompt_scores_zero():
    p = ask("Tell me a joke.")
    assert parse_prompt(p) is None
    assert gold_reward(p, " Why did the chicken cross the road?") == 0.0
    assert oracle_response(p) == ""


GARBAGE = ["", " ", "x" * 1_000_000, "9" * 100_000, "\u00fc\U0001F600\u0000\ufffd" * 50,
           "\n\nHuman: What is 7 + 5?\n\nAssistant: 12", " 7 + 5 = 12." + " blah" * 400, None, 42]


@pytest.mark.parametrize("response", GARBAGE, ids=range(len(GARBAGE)))
def test_scorer_never_raises(response):
    for prompt in (ask("What is 7 + 5?"), ask("Name 3 fruits."), "", "Human:", "\u00fc" * 10_000, None):
        g = gold_reward(prompt, response)
        assert isinstance(g, float) and -1.0 <= g <= 1.0


def test_gold_rewards_batch():
    prompts = [ask("What is 7 + 5?"), ask("Spell river backwards.")]
    assert gold_rewards(prompts, [" 12", " revir"]) == [gold_reward(p, r) for p, r in zip(prompts, [" 12", " revir"])]
    with pytest.raises(ValueError):
        gold_rewards(prompts, [" 12"])


# --- labels ------------------------------------------------------------------------------

def gold_pair(rec):
    p, c = split_prompt(rec["chosen"])
    _, r = split_prompt(rec["rejected"])
    return gold_reward(p, c), gold_reward(p, r)


def test_noise_free_labels_follow_gold(pairs_clean):
    assert all(c > r for c, r in map(gold_pair, pairs_clean))


def test_label_noise_sets_agreement(pairs_noisy):
    agreement = sum(c > r for c, r in map(gold_pair, pairs_noisy)) / len(pairs_noisy)
    assert agreement == pytest.approx(0.75, abs=0.04)


def test_length_is_not_a_shortcut(pairs_clean):
    shorter = [len(split_prompt(r["chosen"])[1]) < len(split_prompt(r["rejected"])[1]) for r in pairs_clean]
    assert 0.35 < sum(shorter) / len(shorter) < 0.65


# --- oracle versus random ---------------------------------------------------------------

def test_oracle_beats_random_pool_choice():
    """Oracle gold is ~0.7 and a random pool pick ~-0.1: demand a margin of 0.5."""
    rng = random.Random(7)
    oracle, rand = [], []
    for _ in range(500):
        task, prompt = sample_prompt(rng)
        pool = [gold_reward(prompt, " " + r) for r in candidate_responses(task, rng)]
        best = gold_reward(prompt, oracle_response(prompt))
        assert best >= max(pool)
        oracle.append(best)
        rand.append(rng.choice(pool))
    assert sum(oracle) / 500 - sum(rand) / 500 > 0.5


def test_distractors_answer_another_request_and_are_wrong_here():
    from exoflow.synthetic import _REFUSAL_RE, DISTRACTORS, _correctness, distractor

    assert DISTRACTORS
    rng = random.Random(11)
    wrong, n, harmful = 0, 600, 0
    for _ in range(n):
        task, prompt = sample_prompt(rng)
        other, text = distractor(task, rng)
        assert other.name != task.name
        refused = _REFUSAL_RE.search(text) is not None
        assert _correctness(other, text, refused) == 1.0, (other, text)  # right for its own task
        g = gold_reward(prompt, " " + text)
        wrong += g <= -0.3  # at most -0.4 + 0.1 (polite); a coincidental right number is rare
        if task.name == "harmful":
            harmful += 1
            assert g <= -0.5 and not refused  # a harmful request answered: never a refusal
    assert wrong / n > 0.97 and harmful > 50


def test_pools_include_the_distractor(monkeypatch):
    import exoflow.synthetic as S

    monkeypatch.setattr(S, "distractor", lambda task, rng: (task, "SENTINEL answer"))
    for seed in range(50):
        task, _ = sample_prompt(random.Random(seed))
        assert "SENTINEL answer" in S.candidate_responses(task, random.Random(seed))
    monkeypatch.setattr(S, "DISTRACTORS", False)
    task, _ = sample_prompt(random.Random(0))
    assert "SENTINEL answer" not in S.candidate_responses(task, random.Random(0))
