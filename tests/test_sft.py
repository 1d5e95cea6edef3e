"""SFT: the response-only loss mask, end-to-end training, and the saved model reloading alone."""

import math
import shutil

import pytest
import torch

from exoflow.config import SFTParams
from exoflow.io import read_json, read_records
from exoflow.sft import IGNORE, SFTCollator, encode_sft, response_nll
from exoflow.workdir import PARAMS_FILE
from tests.helpers import tiny_stage, train_stage

# A word-level tokenizer whose ids are known by hand: EOS 0, pad 1, p1..p5 = 2..6, r1..r4 = 7..10.
VOCAB = ["<|endoftext|>", "<|padding|>", "p1", "p2", "p3", "p4", "p5", "r1", "r2", "r3", "r4"]


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|padding|>")


def test_labels_mask_prompt_and_padding_and_keep_response_with_eos():
    tok = word_tokenizer()
    records = [
        # response r1..r4 cut to max_gen_len=3, + EOS = 4 tokens; the prompt keeps its last 2
        {"prompt": "p1 p2 p3 p4 p5", "chosen": "r1 r2 r3 r4"},
        {"prompt": "p1", "chosen": "r1"},
    ]
    ex = encode_sft(tok, records, max_len=6, max_gen_len=3)
    assert ex == [{"input_ids": [5, 6, 7, 8, 9, 0], "n_prompt": 2},
                  {"input_ids": [2, 7, 0], "n_prompt": 1}]
    batch = SFTCollator(tok.pad_token_id)(ex)
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7, 8, 9, 0],
                                                         [2, 7, 0, 1, 1, 1]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1, 1, 1, 1],
                                                              [1, 1, 1, 0, 0, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([[IGNORE, IGNORE, 7, 8, 9, 0],
                                                      [IGNORE, 7, 0, IGNORE, IGNORE, IGNORE]]))
    # padded to the batch's longest, not to max_len
    assert SFTCollator(tok.pad_token_id)(ex[1:])["input_ids"].shape == (1, 3)


def test_trainer_loss_is_the_response_token_mean(tiny):
    """The model's loss on the collated labels is our summed response NLL / response tokens."""
    from exoflow.modeling import load_causal_lm, load_tokenizer

    tok, model = load_tokenizer(tiny.base), load_causal_lm(tiny.base)
    ex = encode_sft(tok, read_records(tiny.test)[:4], max_len=40, max_gen_len=8)
    batch = SFTCollator(tok.pad_token_id)(ex)
    with torch.no_grad():
        hf_loss = model(**batch).loss
        total, n = response_nll(model, batch)
    assert n == sum(len(e["input_ids"]) - e["n_prompt"] for e in ex)  # response + EOS tokens
    assert float(total / n) == pytest.approx(float(hf_loss), abs=1e-6)


@pytest.fixture(scope="module")
def sft_run(tiny, tmp_path_factory):
    return train_stage("sft", tiny, tmp_path_factory.mktemp("sft"), checkpoint_every=4)


def test_train_sft_end_to_end(sft_run):
    metrics, d = sft_run.metrics, sft_run.dir
    curve = metrics["loss_curve"]
    assert [e["step"] for e in curve] == list(range(1, 17))  # 64 records / 8 per step x 2 epochs
    assert curve[-1]["loss"] < curve[0]["loss"] - 1.0
    assert metrics["test_perplexity"] == pytest.approx(math.exp(metrics["test_nll"]))
    assert metrics["test_nll"] < curve[0]["loss"] and metrics["test_tokens"] > 0
    assert (metrics["num_train"], metrics["num_test"], metrics["global_step"]) == (64, 16, 16)
    assert metrics["resumed_from"] is None and metrics["run"]["precision"] == "fp32"
    assert read_json(d / "out" / "metrics.json") == metrics
    params = read_json(d / "out" / PARAMS_FILE)
    assert params["params"]["lr"] == 3e-3 and params["runtime"]["engine"]["checkpoint_every"] == 4
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (d / "out" / name).exists(), name
    assert list((d / "logs").glob("events.out.tfevents.*"))  # TensorBoard
    assert not list((d / "work").glob("checkpoint-*"))


def test_saved_sft_reloads_alone(sft_run, tmp_path):
    """Copied away from everything else, the folder gives the test NLL the trained model had
    in memory at the end of training (metrics.json), to 1e-6."""
    from exoflow.modeling import load_causal_lm, load_tokenizer

    folder = shutil.copytree(sft_run.dir / "out", tmp_path / "moved")
    tok, model = load_tokenizer(folder), load_causal_lm(folder)
    model.eval()
    p = SFTParams.from_dict(tiny_stage())
    batch = SFTCollator(tok.pad_token_id)(
        encode_sft(tok, read_records(sft_run.test), p.max_len, p.max_gen_len))
    with torch.no_grad():
        total, n = response_nll(model, batch)
    assert n == sft_run.metrics["test_tokens"]
    assert float(total) / n == pytest.approx(sft_run.metrics["test_nll"], abs=1e-6)
