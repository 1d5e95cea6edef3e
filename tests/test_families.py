"""Any causal LM, as the original promises: a tiny random checkpoint folder of every family
(tests/helpers.FAMILIES: GPT-NeoX, Llama-2 and -3, Mistral, Qwen2 and 3, Gemma 2 and 3, GPT-2,
Phi-3), each with a tokenizer in its family's convention, through every stage's code: the ids a
stage feeds the model are the tokenizer's own, padding never changes a row, LoRA finds the
family's linear layers, SFT, the RM and an alignment step train, sampling stops, the exact KL is
non-negative."""

import math

import pytest
import torch

from exoflow.batching import bos_ids, decode_response, encode_pair, encode_prompt, pad_batch
from exoflow.config import LoraParams
from exoflow.logps import text_logps, text_pair_stats
from exoflow.lora import apply_lora, block_linear_layers, merged_state_dict
from exoflow.modeling import load_causal_lm, load_reward_model, load_tokenizer
from exoflow.rewards import score_texts
from exoflow.sampling import sample_completions
from tests.helpers import FAMILIES, align_params, make_family, make_records, tiny_stage

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = make_records(6)
# Each family's linear layers of its blocks: the default LoRA targets.
LINEAR = {
    "gpt_neox": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
    "gpt2": ["c_attn", "c_fc", "c_proj"],
    "phi3": ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"],
}
LLAMA_LIKE = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    name = request.param
    return name, make_family(tmp_path_factory.mktemp(name), name)


def test_ids_are_the_tokenizers_own(family):
    """prompt + response as the stages encode them = the tokenizer's own tokenisation of the
    whole text (its BOS included when it adds one, exactly once) + EOS; the sampling prompt is
    the tokenizer's own; a sampled response decodes back to its text, leading space included;
    a truncated prompt keeps its BOS."""
    name, folder = family
    tok = load_tokenizer(folder)
    adds_bos = FAMILIES[name].get("bos") is not None and FAMILIES[name].get("add_bos", True)
    assert bos_ids(tok) == ([tok.bos_token_id] if adds_bos else [])
    for r in PAIRS:
        for response in (r["chosen"], r["rejected"]):
            e = encode_pair(tok, r["prompt"], response, max_len=256, max_gen_len=64, add_eos=True)
            whole = tok(r["prompt"] + response)["input_ids"]  # the tokenizer's template
            assert e.input_ids == whole + [tok.eos_token_id], name
            if adds_bos:  # once, before the prompt
                assert e.input_ids[0] == tok.bos_token_id not in e.input_ids[1:]
            prompt = encode_prompt(tok, r["prompt"], max_len=256)
            assert prompt == tok(r["prompt"])["input_ids"] == e.input_ids[:e.n_prompt]
            assert decode_response(tok, prompt, e.input_ids[e.n_prompt:-1]) == response
    full = encode_pair(tok, PAIRS[0]["prompt"], PAIRS[0]["chosen"], 256, 8, add_eos=True)
    n = len(full.input_ids) - 3  # three prompt tokens too many
    cut = encode_pair(tok, PAIRS[0]["prompt"], PAIRS[0]["chosen"], n, 8, add_eos=True)
    assert len(cut.input_ids) == n and cut.input_ids[-9:] == full.input_ids[-9:]
    assert cut.input_ids[:len(bos_ids(tok))] == bos_ids(tok)  # the BOS stays, the body is cut
    assert cut.input_ids[len(bos_ids(tok)):cut.n_prompt] == full.input_ids[
        len(bos_ids(tok)) + 3:full.n_prompt]


def test_pad_token_is_an_existing_one(family):
    """Padding never adds a token (the embeddings keep their rows): the tokenizer's pad token,
    else EOS."""
    name, folder = family
    tok = load_tokenizer(folder)
    model = load_causal_lm(folder)
    assert len(tok) <= model.get_input_embeddings().weight.shape[0]
    pad = FAMILIES[name]["pad"]
    assert tok.pad_token == (pad if pad else FAMILIES[name]["eos"])


def test_padded_rows_equal_rows_alone(family):
    """Right-padded log-probs, and the reward head under right and left padding (position ids
    from the mask, as every left-padded pass here: GPT-2's positions are absolute), equal the
    same sequences alone: padding never changes the model."""
    name, folder = family
    tok = load_tokenizer(folder)
    lm = load_causal_lm(folder).eval()
    prompts = [r["prompt"] for r in PAIRS[:3]]
    comps = [[r["chosen"], r["rejected"]] for r in PAIRS[:3]]
    batched = text_logps(lm, tok, prompts, comps, 128, 32, batch_size=6)
    alone = text_logps(lm, tok, prompts, comps, 128, 32, batch_size=1)
    for a, b in zip(sum(batched, []), sum(alone, [])):
        assert a == pytest.approx(b, abs=1e-4), name
    rm = load_reward_model(str(folder), pad_token_id=tok.pad_token_id).eval()
    flat_p = [p for p, cs in zip(prompts, comps) for _ in cs]
    flat_r = sum(comps, [])
    one = score_texts(rm, tok, flat_p, flat_r, 1, 128, 32, progress=False)
    assert score_texts(rm, tok, flat_p, flat_r, 6, 128, 32, progress=False) == \
        pytest.approx(one, abs=1e-4)
    seqs = [encode_pair(tok, p, y, 128, 32, add_eos=False) for p, y in zip(flat_p, flat_r)]
    left = pad_batch(seqs, tok.pad_token_id, "left")
    pos = (left["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # as the left-padded sampler
    with torch.no_grad():
        got = rm(input_ids=left["input_ids"], attention_mask=left["attention_mask"],
                 position_ids=pos).logits
    assert got[:, 0].tolist() == pytest.approx(one, abs=1e-4), name


def test_sampling_stops_and_is_seeded(family):
    """Sampled completions do not depend on the batch or on the shared prompt cache, and stop at
    the next turn or EOS."""
    name, folder = family
    tok = load_tokenizer(folder, padding_side="left")
    lm = load_causal_lm(folder).eval()
    prompts = [r["prompt"] for r in PAIRS[:3]]
    kw = dict(num_return=2, temperature=1.0, top_k=0, max_new_tokens=6, max_len=64, seed=1,
              progress=False)
    a = sample_completions(lm, tok, prompts, batch_size=3, **kw)
    assert a == sample_completions(lm, tok, prompts, batch_size=1, share_prompt_cache=False, **kw)
    assert all(isinstance(c, str) and "\n\nHuman:" not in c for cs in a for c in cs)


def test_lora_adapts_every_linear_layer_of_the_blocks(family, tmp_path):
    """Default targets: the family's linear layers (not the embeddings, the LM head or the
    reward head, which trains in full); the merged save loads as a plain folder with the LoRA
    model's outputs."""
    name, folder = family
    lm = load_causal_lm(folder)
    want = LINEAR.get(name, LLAMA_LIKE)
    assert block_linear_layers(lm) == want
    model = apply_lora(lm, LoraParams(rank=2), "CAUSAL_LM")
    wrapped = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters()
               if "lora_A" in n}
    assert wrapped == set(want), name
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    tok = load_tokenizer(folder)
    model.get_base_model().save_pretrained(str(tmp_path / "m"), state_dict=merged_state_dict(model))
    ids = torch.tensor([tok(PAIRS[0]["prompt"] + PAIRS[0]["chosen"])["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits,
                              load_causal_lm(tmp_path / "m")(input_ids=ids).logits, atol=1e-5)
    rm = apply_lora(load_reward_model(str(folder), pad_token_id=tok.pad_token_id),
                    LoraParams(rank=2), "SEQ_CLS")
    trained = {n for n, p in rm.named_parameters() if p.requires_grad}
    assert any("score" in n and "lora" not in n for n in trained)
    assert not any("score" in n and "lora" in n for n in trained)


def test_every_stage_trains(family, tmp_path):
    """One SFT step, one RM step and one alignment step (exo-rw, the reference on the fly) from
    the family's folder: finite losses, saved folders that load; the exact KL of the aligned
    checkpoint's samples against the SFT model is non-negative."""
    from exoflow.align import train_align
    from exoflow.config import RMParams, SFTParams
    from exoflow.io import write_records
    from exoflow.rm import train_rm
    from exoflow.sft import train_sft
    from tests.helpers import k4_records, tiny_runtime

    name, folder = family
    write_records(tmp_path / "train.jsonl", make_records(8))
    write_records(tmp_path / "k4.jsonl", k4_records(4))
    stage = tiny_stage(epochs=1, max_steps=1, batch_size=8, micro_batch_size=8)
    rt = tiny_runtime(checkpoint_every=100)
    sft = train_sft(str(folder), tmp_path / "train.jsonl", tmp_path / "train.jsonl",
                    tmp_path / "sft", tmp_path / "w1", None, SFTParams.from_dict(stage), rt)
    rm = train_rm(str(folder), tmp_path / "train.jsonl", tmp_path / "train.jsonl",
                  tmp_path / "rm", tmp_path / "w2", None, RMParams.from_dict(stage), rt)
    assert math.isfinite(sft["loss_curve"][0]["loss"]) and math.isfinite(rm["train_loss"])
    p = align_params(max_steps=1, save_every=1, batch_size=4, micro_batch_size=4)
    m = train_align(tmp_path / "sft", tmp_path / "k4.jsonl", tmp_path / "al", tmp_path / "w3",
                    None, p, rt)
    assert m["ref_logps"] == "model" and math.isfinite(m["loss_curve"][0]["loss"])
    tok = load_tokenizer(tmp_path / "sft")
    policy, ref = load_causal_lm(tmp_path / "al" / "ckpt1"), load_causal_lm(tmp_path / "sft")
    prompts = [r["prompt"] for r in PAIRS[:2]]
    comps = [[r["chosen"]] for r in PAIRS[:2]]
    kl = text_pair_stats(policy, ref, tok, prompts, comps, 128, 32, 2, kl_temperature=0.8)[2]
    assert all(v >= 0 for v in sum(kl, [])) and any(v > 0 for v in sum(kl, []))


def test_a_gguf_file_imports_as_the_model_it_holds(tmp_path):
    """model.init: a .gguf file. A Llama checkpoint written as an F32 GGUF in llama.cpp's layout
    (tests/helpers.write_llama_gguf) and imported by the workflow's script gives back the same
    model (logits to 1e-5) and the same tokenizer ids (its BOS included); the folder is a plain
    checkpoint (no quantisation left in its config)."""
    from exoflow.io import read_json
    from tests.helpers import script, write_llama_gguf

    folder = make_family(tmp_path / "llama3", "llama3")
    gguf = write_llama_gguf(folder, tmp_path / "tiny.gguf")
    out = tmp_path / "imported"
    script("import_base_model", "--gguf", gguf, "--model", out / "config.json", check=True)
    assert "quantization_config" not in read_json(out / "config.json")
    a, b = load_causal_lm(folder).eval(), load_causal_lm(out).eval()
    ta, tb = load_tokenizer(folder), load_tokenizer(out)
    text = PAIRS[0]["prompt"] + PAIRS[0]["chosen"]
    assert ta(text)["input_ids"] == tb(text)["input_ids"]
    assert bos_ids(tb) == [tb.bos_token_id]
    ids = torch.tensor([ta(text)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(a(input_ids=ids).logits, b(input_ids=ids).logits, atol=1e-5)


def test_a_gguf_tokenizer_that_drops_its_bos_gets_it_back(tmp_path):
    """transformers 5.17 (the GPU machine's; 5.24 does not) builds a byte-level GGUF vocabulary's
    tokenizer without the BOS the file's tokenizer.ggml.add_bos_token asks for: simulated here
    on any version by switching it off, then restored from the file's metadata."""
    from transformers import AutoTokenizer

    from exoflow.modeling import _gguf_special_tokens
    from tests.helpers import write_llama_gguf

    gguf = write_llama_gguf(make_family(tmp_path / "llama3", "llama3"), tmp_path / "tiny.gguf")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.add_bos_token = False
    assert tok("Hello there")["input_ids"][0] != tok.bos_token_id  # the 5.17 tokenizer
    _gguf_special_tokens(tok, gguf)
    ids = tok("Hello there")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[1:] == tok("Hello there", add_special_tokens=False)["input_ids"]
    tok.save_pretrained(tmp_path / "saved")  # and the imported folder keeps it
    assert AutoTokenizer.from_pretrained(tmp_path / "saved")("Hello there")["input_ids"] == ids


def test_a_gguf_files_positions_are_read_from_its_metadata(tmp_path):
    """The dry run's limit for a GGUF model.init is the file's <arch>.context_length (were the
    metadata read as absent, the check would pass silently), and a max_len beyond it is refused
    naming the key and the file."""
    from exoflow.config.constraints import ConfigError, gguf_positions, sequences_fit_positions
    from exoflow.plan import Plan
    from tests.helpers import TINY, merged, write_llama_gguf

    gguf = write_llama_gguf(make_family(tmp_path / "llama3", "llama3", positions=128),
                            tmp_path / "m.gguf")
    assert gguf_positions(gguf) == (128, f"llama.context_length = 128 in {gguf}")
    plan = Plan(merged(TINY, {"model": {"init": str(gguf)}}))
    with pytest.raises(ConfigError, match=r"exceeds the model's 128 positions "
                                          r"\(llama\.context_length = 128 in "):
        sequences_fit_positions(plan)


def test_a_multimodal_config_is_read_through_its_text_config(tmp_path):
    """A key the top level of config.json lacks or sets to null comes from text_config (where
    Gemma 3 and Llava keep their text model's settings), a top-level value wins: the position
    limit, the vocabulary of the tokenizer check and of the cluster's requests read the same
    (a null at the top once hid text_config's limit, and the positions check passed)."""
    import json

    from exoflow.config.constraints import model_positions
    from exoflow.io import model_config
    from exoflow.plan import Plan
    from tests.helpers import TINY, merged

    folder = tmp_path / "mm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "mm", "max_position_embeddings": None, "vocab_size": 500,
        "text_config": {"max_position_embeddings": 128, "vocab_size": 300}}))
    cfg = model_config(folder)
    assert (cfg["model_type"], cfg["max_position_embeddings"], cfg["vocab_size"]) == ("mm", 128,
                                                                                     500)
    plan = Plan(merged(TINY, {"model": {"init": str(folder)}}))
    assert model_positions(plan) == (128, f"max_position_embeddings = 128 in {folder}/"
                                          "config.json")
    assert model_config(tmp_path / "absent") == {}
    (folder / "config.json").write_text("{not json")
    assert model_config(folder) == {}


def test_a_sequence_longer_than_the_models_positions_is_refused_by_the_dry_run(tmp_path):
    """GPT-2's n_positions = 128 under the tiny preset's max_len 256: the dry run refuses it,
    naming the key, the length and the model's limit; a GGUF model.init plans its import."""
    from tests.helpers import copy_workflow, planned_jobs, snakemake, write_llama_gguf

    short = make_family(tmp_path / "gpt2", "gpt2", positions=128)
    (tmp_path / "wf").mkdir()
    wd = copy_workflow(tmp_path / "wf")
    (wd / "m.yaml").write_text(f"model: {{init: '{short}'}}\n")
    proc = snakemake(wd, "eval_all", "-n", "--configfile", "configs/tiny.yaml", "m.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (f"sft.max_len = 256 tokens exceeds the model's 128 positions (n_positions = 128 in "
            f"{short}/config.json)") in out, out[-2000:]
    gguf = write_llama_gguf(make_family(tmp_path / "llama3", "llama3"), tmp_path / "m.gguf")
    (wd / "g.yaml").write_text(f"model: {{init: '{gguf}'}}\n")
    jobs = planned_jobs(snakemake(wd, "eval_all", "-n", "--configfile", "configs/tiny.yaml",
                                  "g.yaml"))
    assert jobs["import_base_model"] == 1 and "train_tokenizer" not in jobs
    assert jobs["train_sft"] == jobs["train_rm"] == 1
