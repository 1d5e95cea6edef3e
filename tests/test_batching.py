"""The one token layout: truncation rules and padding, on a character-level stand-in tokenizer."""

import torch

from exoflow.batching import Encoded, encode_pair, encode_prompt, pad_batch


class CharTok:
    """Each character is one token (its code point); EOS is 0."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_prompt_that_fits_is_kept_whole():
    # Regression: a prompt longer than half of the room left used to lose its head.
    prompt, response = "p" * 300, "r" * 40
    enc = encode_pair(CharTok(), prompt, response, max_len=512, max_gen_len=200, add_eos=True)
    assert enc.n_prompt == 300 and len(enc) == 341


def test_truncation_left_for_prompt_right_for_response():
    enc = encode_pair(CharTok(), "abcdefgh", "xyz123", max_len=8, max_gen_len=4, add_eos=True)
    # response right-truncated to 4 tokens + EOS = 5; prompt keeps its last 3 tokens
    assert enc.input_ids == [ord(c) for c in "fghxyz1"] + [0] and enc.n_prompt == 3
    enc = encode_pair(CharTok(), "abc", "xyz", max_len=3, max_gen_len=3, add_eos=False)
    assert enc.input_ids == [ord(c) for c in "xyz"] and enc.n_prompt == 0


def test_eos_before_the_cut_as_the_original():
    """eos_after_cut=False: EOS is appended, then the response cut to max_gen_len (the
    original's SFTDataset/ExactDataset), so a response of max_gen_len tokens or more has none."""
    ord_ = lambda t: [ord(c) for c in t]  # noqa: E731
    for response, want in (("xyz", ord_("xyz") + [0]), ("xyz1", ord_("xyz1")),
                           ("xyz123", ord_("xyz1"))):
        enc = encode_pair(CharTok(), "ab", response, max_len=16, max_gen_len=4, add_eos=True,
                          eos_after_cut=False)
        assert enc.input_ids == ord_("ab") + want and enc.n_prompt == 2, response
    # exoflow's: the cut response, then EOS
    enc = encode_pair(CharTok(), "ab", "xyz123", max_len=16, max_gen_len=4, add_eos=True)
    assert enc.input_ids == ord_("abxyz1") + [0]
    # no EOS at all for the RM, whichever the setting
    enc = encode_pair(CharTok(), "ab", "xyz", max_len=16, max_gen_len=4, add_eos=False,
                      eos_after_cut=False)
    assert enc.input_ids == ord_("abxyz")


def test_the_original_sampling_window_keeps_a_long_prompts_last_312_tokens():
    """config.yaml's sample/eval.max_prompt_len 312 (the original pipeline's 512 - 200 'hole'):
    the generation input is the prompt's last 312 tokens; a shorter prompt is kept whole."""
    import yaml

    from tests.helpers import ROOT

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert cfg["sample"]["max_prompt_len"] == cfg["eval"]["max_prompt_len"] == 312
    prompt = "".join(chr(0x100 + i) for i in range(700))
    assert encode_prompt(CharTok(), prompt, 312) == [ord(c) for c in prompt[-312:]]
    assert encode_prompt(CharTok(), prompt[:200], 312) == [ord(c) for c in prompt[:200]]


def test_pad_batch_right_and_left():
    items = [Encoded([5, 6, 7], 1), Encoded([8, 9], 1)]
    right = pad_batch(items, pad_id=1, side="right")
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 9, 1]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert right["loss_mask"].tolist() == [[0, 1, 1], [0, 1, 0]]
    left = pad_batch(items, pad_id=1, side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [1, 8, 9]]
    assert left["loss_mask"].tolist() == [[0, 1, 1], [0, 0, 1]]
    assert right["input_ids"].dtype == torch.long
