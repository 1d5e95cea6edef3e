"""The one token layout: truncation rules and padding, on a character-level stand-in tokenizer."""

import torch

from exoflow.batching import Encoded, encode_pair, pad_batch


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
