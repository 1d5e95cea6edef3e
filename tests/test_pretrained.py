"""model.init as a local Hugging Face checkpoint folder, the way a user brings Pythia.

Two tokenizer variants (tests/helpers.make_pretrained): Pythia's, where ``<|padding|>``
is in the vocabulary but ``pad_token`` is unset, and pad = EOS. The tokenizer comes from the
checkpoint (no BPE training), SFT learns to end a turn with EOS and sampling stops there, the
reward head reads the last response token whatever the padding. The last test runs the
shortened DAG from such a folder.
"""

import json
import time

import pytest
import torch

from exoflow.batching import Encoded, pad_batch
from exoflow.config import SFTParams
from exoflow.io import read_json, read_records, write_records
from exoflow.modeling import load_causal_lm, load_reward_model, load_tokenizer
from exoflow.sampling import sample_completions
from exoflow.sft import IGNORE, SFTCollator, encode_sft, train_sft
from tests.helpers import (
    copy_workflow,
    make_family,
    make_pretrained,
    make_records,
    planned_jobs,
    snakemake,
    tiny_runtime,
)

PADS = ["unset", "eos"]


@pytest.fixture(scope="module", params=PADS)
def pretrained(request, tmp_path_factory):
    return request.param, make_pretrained(tmp_path_factory.mktemp(f"pt_{request.param}"),
                                          pad=request.param)


def test_tokenizer_comes_from_the_checkpoint_with_a_pad_token(pretrained):
    pad, folder = pretrained
    assert read_json(folder / "tokenizer_config.json").get("pad_token") == (
        None if pad == "unset" else "<|endoftext|>")
    tok = load_tokenizer(folder)
    assert tok.eos_token_id == 0 and len(tok) == 1000  # the checkpoint's own vocabulary
    # Pythia: its <|padding|> token (id 1) becomes the pad token, never a new token
    assert tok.pad_token_id == (1 if pad == "unset" else 0)


def test_sft_labels_keep_eos_when_pad_is_eos(pretrained):
    """The EOS ending each response is a label even where the padding uses the same id."""
    _, folder = pretrained
    tok = load_tokenizer(folder)
    recs = [{"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": " Hello there, friend."},
            {"prompt": "\n\nHuman: bye\n\nAssistant:", "chosen": " Bye."}]
    ex = encode_sft(tok, recs, max_len=64, max_gen_len=32)
    b = SFTCollator(tok.pad_token_id)(ex)
    for i, e in enumerate(ex):
        n = len(e["input_ids"])
        assert b["labels"][i, n - 1] == tok.eos_token_id       # the response's EOS is learnt
        assert (b["labels"][i, n:] == IGNORE).all()            # padding is not
        assert (b["labels"][i, :e["n_prompt"]] == IGNORE).all()
    assert (b["input_ids"][1, len(ex[1]["input_ids"]):] == tok.pad_token_id).all()


def test_sft_learns_to_end_a_turn_and_sampling_stops(pretrained, tmp_path):
    """SFT from the checkpoint on answers that end in EOS: greedy samples reproduce an answer
    and stop at its EOS (well before max_new_tokens), with either pad token."""
    _, folder = pretrained
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    answer = " Sure, happy to help."
    write_records(train, [dict(r, chosen=answer) for r in make_records(32)])
    write_records(test, [dict(r, chosen=answer) for r in make_records(8, offset=32)])
    params = SFTParams.from_dict(dict(lr=1e-2, epochs=6, batch_size=8, micro_batch_size=8,
                                      max_len=64, max_gen_len=24))
    engine = tiny_runtime(logging_steps=10, checkpoint_every=1000, num_threads=2)
    train_sft(str(folder), train, test, tmp_path / "sft", tmp_path / "work", tmp_path / "logs",
              params, engine)
    tok = load_tokenizer(tmp_path / "sft", padding_side="left")
    lm = load_causal_lm(tmp_path / "sft").eval()
    assert lm.get_output_embeddings().weight.shape[0] == 1024  # the checkpoint's padded rows
    prompts = [r["prompt"] for r in make_records(4, offset=40)]
    outs = sample_completions(lm, tok, prompts, num_return=1, temperature=0, top_k=0,
                              max_new_tokens=40, max_len=64, batch_size=4, seed=0, progress=False)
    assert [o[0] for o in outs] == [answer] * 4


def test_reward_head_reads_the_last_token_when_pad_is_eos(pretrained):
    """A padded row's reward equals the same sequence's reward alone (right and left padding):
    with pad = EOS the head must still find the last response token."""
    _, folder = pretrained
    tok = load_tokenizer(folder)
    rm = load_reward_model(str(folder), pad_token_id=tok.pad_token_id).eval()
    seqs = [tok("\n\nHuman: hi\n\nAssistant: Hello there, my friend.", add_special_tokens=False)
            ["input_ids"], tok("\n\nHuman: hi\n\nAssistant: No.", add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        alone = [float(rm(input_ids=torch.tensor([s])).logits) for s in seqs]
        for side in ("right", "left"):
            b = pad_batch([Encoded(s, 0) for s in seqs], tok.pad_token_id, side)
            r = rm(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.squeeze(-1)
            assert r.tolist() == pytest.approx(alone, abs=1e-5), side


QUICK = """
data:
  synthetic: {{num_train: 600, num_test: 64}}
model: {{init: {init}}}
sft: {{epochs: 1}}
rm: {{epochs: 1}}
sample: {{max_new_tokens: 24}}
align:
  only: [exo-rw_nc2]
  defaults: {{max_steps: 4, save_every: 2, batch_size: 16, micro_batch_size: 16}}
eval: {{num_prompts: 16, val_prompts: 8, max_new_tokens: 24, checkpoints: 2}}
study: {{compare: []}}
"""


@pytest.mark.slow  # ~90 s; tests/test_families.py runs every stage's code per family by default
@pytest.mark.e2e
def test_dag_from_a_pretrained_folder(tmp_path_factory):
    """The shortened tiny DAG (one alignment run) from a Llama-2-style checkpoint folder (its
    tokenizer adds a BOS token, marks word starts with a sentencepiece "▁", has no pad token):
    no tokenizer training and no scratch model; every model keeps the checkpoint's vocabulary;
    every sampled completion starts as the model wrote it (a leading space kept); replacing
    the checkpoint's weights re-runs SFT and RM (the folder's files are inputs)."""
    init = make_family(tmp_path_factory.mktemp("base model"), "llama")
    wd = copy_workflow(tmp_path_factory.mktemp("pt_dag"))
    (wd / "quick.yaml").write_text(QUICK.format(init=json.dumps(str(init))))
    cfg = ["--configfile", "configs/tiny.yaml", "quick.yaml"]
    proc = snakemake(wd, "eval_all", *cfg)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    ran = planned_jobs(proc)
    assert "train_tokenizer" not in ran and "init_base_model" not in ran
    assert ran["train_sft"] == ran["train_rm"] == ran["train_align_exo_rw_nc2"] == 1
    out = wd / "results" / "tiny"
    assert not (out / "models" / "base").exists() and not (out / "models" / "tokenizer").exists()
    vocab = load_tokenizer(init).get_vocab()
    for m in ("sft", "rm", "align/exo-rw_nc2/ckpt2"):
        assert read_json(out / "models" / m / "config.json")["vocab_size"] == len(vocab), m
        assert load_tokenizer(out / "models" / m).get_vocab() == vocab
    assert read_json(out / "models" / "sft" / "exoflow_params.json")["base"] == str(init)
    samples = read_records(out / "samples" / "exo-rw_nc2" / "ckpt2" / "test.jsonl")
    assert len(samples) == 16
    tok = load_tokenizer(init)
    for r in samples[:4]:  # each decodes to what its tokens add after the prompt
        for c in r["completions"]:
            ids = tok(r["prompt"] + c)["input_ids"]
            assert ids[0] == tok.bos_token_id and tok.decode(ids, skip_special_tokens=True) \
                .endswith(c)
    assert (out / "summary.csv").exists()

    assert planned_jobs(snakemake(wd, "eval_all", "-n", *cfg)) == {}
    time.sleep(1)
    make_family(init, "llama", seed=1)  # other weights, the same tokenizer
    again = planned_jobs(snakemake(wd, "eval_all", "-n", *cfg))
    assert again.get("train_sft") == again.get("train_rm") == 1
