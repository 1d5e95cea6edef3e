"""Preprocessing rules of raw HH dialogues, on small hand-written dialogues."""

import pytest

from exoflow import hh


def d(*turns):
    return "".join(f"\n\n{t}" for t in turns)


def test_single_turn():
    pair = hh.to_pair(d("Human: Hi there", "Assistant: Hello!"), d("Human: Hi there", "Assistant: Go away."))
    assert pair == {"prompt": "\n\nHuman: Hi there\n\nAssistant:", "chosen": " Hello!", "rejected": " Go away."}


def test_shared_prefix_and_later_turns_ignored():
    shared = ("Human: A?", "Assistant: B.", "Human: C?")
    pair = hh.to_pair(d(*shared, "Assistant: good", "Human: thanks", "Assistant: welcome"),
                      d(*shared, "Assistant: bad", "Human: what?"))
    assert pair["prompt"] == "\n\nHuman: A?\n\nAssistant: B.\n\nHuman: C?\n\nAssistant:"
    assert (pair["chosen"], pair["rejected"]) == (" good", " bad")


def test_multi_paragraph_turns_are_joined():
    chosen = d("Human: List two things.", "Assistant: Here:", "1. one", "2. two")
    rejected = d("Human: List two things.", "Assistant: No.")
    pair = hh.to_pair(chosen, rejected)
    assert pair["chosen"] == " Here:\n\n1. one\n\n2. two"
    turns = hh.split_turns(chosen)
    assert [t.role for t in turns] == ["Human", "Assistant"]


def test_multi_paragraph_prompt_turn_kept_verbatim():
    human = ("Human: Read this:", "some quoted text", "and more")
    pair = hh.to_pair(d(*human, "Assistant: ok"), d(*human, "Assistant: no"))
    assert pair["prompt"] == "\n\nHuman: Read this:\n\nsome quoted text\n\nand more\n\nAssistant:"


def test_humans_tag_normalised():
    pair = hh.to_pair(d("Humans: hey", "Assistant: yes"), d("Human: hey", "Assistant: no"))
    assert pair["prompt"] == "\n\nHuman: hey\n\nAssistant:"
    assert hh.normalise(d("Humans: a", "Assistant: b")) == d("Human: a", "Assistant: b")


def test_leading_space_same_way_for_both():
    pair = hh.to_pair(d("Human: q", "Assistant:no space"), d("Human: q", "Assistant:   many  \n"))
    assert (pair["chosen"], pair["rejected"]) == (" no space", " many")


@pytest.mark.parametrize("reason,chosen,rejected", [
    ("identical", d("Human: q", "Assistant: a"), d("Human: q", "Assistant: a")),
    ("identical", d("Human: q", "Assistant: a"), d("Human: q", "Assistant: a  ")),
    ("empty_response", d("Human: q", "Assistant: a"), d("Human: q", "Assistant: ")),
    ("empty_response", d("Human: q", "Assistant:  \n "), d("Human: q", "Assistant: a")),
    ("not_human_first", d("Assistant: hi", "Human: q", "Assistant: a"), d("Assistant: hi", "Human: q", "Assistant: b")),
    ("not_human_first", "no tags at all", d("Human: q", "Assistant: b")),
    ("not_assistant_turn", d("Human: q1", "Assistant: a"), d("Human: q2", "Assistant: a")),
    ("not_assistant_turn", d("Human: q", "Assistant: a"), d("Human: q", "Assistant: a", "Human: more")),
])
def test_drops(reason, chosen, rejected):
    with pytest.raises(hh.Dropped) as e:
        hh.to_pair(chosen, rejected)
    assert e.value.reason == reason


def test_whitespace_only_turn_in_prompt_is_kept():
    shared = ("Human: q", "Assistant: a", "Human:   ")
    pair = hh.to_pair(d(*shared, "Assistant: x"), d(*shared, "Assistant: y"))
    assert pair["prompt"] == "\n\nHuman: q\n\nAssistant: a\n\nHuman:   \n\nAssistant:"


def test_pair_to_rewards():
    rec = hh.pair_to_rewards({"prompt": "P", "chosen": " c", "rejected": " r"})
    assert rec == {"prompt": "P", "completions": [" c", " r"], "rewards": [1.0, 0.0]}


def test_a_marker_glued_into_an_assistant_turn_becomes_a_space():
    """As the original preproc.py: "Human: " or "Humans: " inside an Assistant turn's first
    paragraph is a turn marker glued into the response; it is rewritten to a space in both
    dialogues (prompt turns too), never in a Human turn or a later paragraph."""
    pair = hh.to_pair(d("Human: Hi", "Assistant: Sure. Human: and more?"),
                      d("Human: Hi", "Assistant: No. Humans: why?"))
    assert (pair["chosen"], pair["rejected"]) == (" Sure.  and more?", " No.  why?")
    shared = ("Human: Tell me about Human: rights", "Assistant: Ok Human: fine", "Human: more")
    pair = hh.to_pair(d(*shared, "Assistant: good", "later"), d(*shared, "Assistant: bad"))
    assert pair["prompt"] == ("\n\nHuman: Tell me about Human: rights\n\nAssistant: Ok  fine"
                              "\n\nHuman: more\n\nAssistant:")
    kept = hh.to_pair(d("Human: Q", "Assistant: A", "Human: inside a paragraph"),
                      d("Human: Q", "Assistant: B"))
    assert kept["chosen"] == " A"  # "Human: inside..." is a turn of its own there
    para = hh.to_pair(d("Human: Q", "Assistant: Here:", "and Human: this"),
                      d("Human: Q", "Assistant: no"))
    assert para["chosen"] == " Here:\n\nand Human: this"  # the original leaves later paragraphs


def test_a_shared_turn_with_extra_spaces_is_shared():
    """Where a shared Assistant turn starts with two spaces, the original strips them in the
    chosen dialogue only and splits the pair there (chosen = rejected); here the turn is shared
    and the pair splits where the dialogues differ."""
    shared = ("Human: A?", "Assistant:   B.", "Human: C?")
    pair = hh.to_pair(d(*shared, "Assistant: good"), d(*shared, "Assistant: bad"))
    assert pair == {"prompt": "\n\nHuman: A?\n\nAssistant:   B.\n\nHuman: C?\n\nAssistant:",
                    "chosen": " good", "rejected": " bad"}


def test_the_shared_real_sample_has_the_counts_the_readme_states():
    """On the 2,312 real raw pairs of ../shared/hh-rlhf-sample (README, "Real HH"), read and
    preprocessed as the data stage does (its stats.json): 4 dropped (empty response), 48 kept
    pairs with a glued turn marker rewritten (43 train, 5 test), 26 with a shared Assistant turn
    that starts with extra spaces, kept shared in the prompt (21 train, 5 test)."""
    from exoflow.data import iter_local, preprocess
    from tests.helpers import HH_SAMPLE

    if not (HH_SAMPLE / "train.jsonl.gz").exists():
        pytest.skip(f"no real HH sample at {HH_SAMPLE}")
    got = {}
    for split in ("train", "test"):
        pairs, stats = preprocess(iter_local(str(HH_SAMPLE), split, "error"))
        spaced = sum(any(t.role == hh.ASSISTANT and t.text.startswith("  ")
                         for t in hh.split_turns(p["prompt"])) for p in pairs)
        got[split] = (stats.as_dict(), spaced)
    assert got == {
        "train": ({"read": 2000, "kept": 1996, "dropped": {"empty_response": 4},
                   "subsampled_out": 0, "rewritten": {"glued_markers": 43}}, 21),
        "test": ({"read": 312, "kept": 312, "dropped": {}, "subsampled_out": 0,
                  "rewritten": {"glued_markers": 5}}, 5)}
