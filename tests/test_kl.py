"""The exact per-token KL against a brute-force enumeration on a tiny vocabulary."""

import itertools
import math

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from exoflow.logps import model_response_kl, model_response_logps

V, EOS, L = 5, 0, 3  # vocabulary, end token, longest response
PROMPT = [3, 1, 4]


def tiny_lm(seed):
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=V, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, eos_token_id=EOS,
                        pad_token_id=EOS, tie_word_embeddings=False)
    m = GPTNeoXForCausalLM(cfg).double().eval()
    with torch.no_grad():  # sharper distributions than the init's near-uniform ones
        m.get_output_embeddings().weight.mul_(20)
    return m


def responses():
    """Every response of at most L tokens that stops at its first EOS."""
    out = []
    for n in range(1, L + 1):
        for ys in itertools.product(range(V), repeat=n):
            if EOS in ys[:-1] or (n < L and ys[-1] != EOS):
                continue
            out.append(list(ys))
    return out


def next_dist(model, prefix, tau):
    with torch.no_grad():
        z = model(input_ids=torch.tensor([prefix])).logits[0, -1].double()
    return torch.log_softmax(z / tau, -1)


def batch(ys):
    t = len(PROMPT) + max(len(y) for y in ys)
    ids = torch.full((len(ys), t), EOS)
    att = torch.zeros(len(ys), t, dtype=torch.long)
    mask = torch.zeros(len(ys), t)
    for i, y in enumerate(ys):
        seq = PROMPT + y
        ids[i, :len(seq)] = torch.tensor(seq)
        att[i, :len(seq)] = 1
        mask[i, len(PROMPT):len(seq)] = 1
    return ids, att, mask


@pytest.mark.parametrize("tau", [1.0, 0.8])
def test_exact_kl_against_enumeration(tau):
    pi, ref = tiny_lm(1), tiny_lm(2)
    ys = responses()
    assert len(ys) == 1 + (V - 1) + (V - 1) ** 2 * V  # 85 responses
    # brute force: the sequence-level KL(pi_tau || ref_tau) over every response
    log_p, log_q, per_token = [], [], []
    for y in ys:
        lp = lq = 0.0
        kl_sum = 0.0
        for t, tok in enumerate(y):
            a = next_dist(pi, PROMPT + y[:t], tau)
            b = next_dist(ref, PROMPT + y[:t], tau)
            lp += float(a[tok])
            lq += float(b[tok])
            kl_sum += float((a.exp() * (a - b)).sum())
        log_p.append(lp)
        log_q.append(lq)
        per_token.append(kl_sum)
    probs = [math.exp(v) for v in log_p]
    assert sum(probs) == pytest.approx(1.0, abs=1e-9)  # the enumeration is complete
    kl_seq = sum(p * (a - b) for p, a, b in zip(probs, log_p, log_q))
    assert kl_seq > 0.05

    ids, att, mask = batch(ys)
    with torch.no_grad():
        est = model_response_kl(pi, ref, ids, att, mask, tau)  # (S,)
        lr = (model_response_logps(pi, ids, att, mask, tau)
              - model_response_logps(ref, ids, att, mask, tau))
    assert (est >= 0).all()
    for e, h in zip(est.tolist(), per_token):  # each sample's sum, by hand
        assert e == pytest.approx(h, abs=1e-5)
    expected = sum(p * e for p, e in zip(probs, est.tolist()))
    assert expected == pytest.approx(kl_seq, rel=1e-5)  # unbiased: the chain rule
    # the log-ratio estimator has the same mean but a larger spread over samples, and single
    # samples below 0
    mean_lr = sum(p * v for p, v in zip(probs, lr.tolist()))
    assert mean_lr == pytest.approx(kl_seq, rel=1e-5)
    var = lambda xs, m: sum(p * (x - m) ** 2 for p, x in zip(probs, xs))  # noqa: E731
    assert var(est.tolist(), kl_seq) < var(lr.tolist(), kl_seq)
    assert min(lr.tolist()) < 0


def test_same_model_gives_zero():
    pi = tiny_lm(1)
    ids, att, mask = batch(responses()[:10])
    with torch.no_grad():
        assert model_response_kl(pi, pi, ids, att, mask, 0.8).abs().max() < 1e-12


def test_text_pair_stats_equal_the_separate_passes(tmp_path):
    """One pass of both models gives the log-probs text_logps gives each, and the exact KL
    of model_response_kl, in the shape of the completions."""
    from exoflow.logps import text_logps, text_pair_stats
    from exoflow.modeling import build_scratch_model, load_causal_lm, load_tokenizer
    from tests.helpers import make_base

    base = make_base(tmp_path / "a")
    tok = load_tokenizer(base)
    other = tmp_path / "b"
    scratch = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                   max_position_embeddings=256)
    build_scratch_model(scratch, tok, seed=5).save_pretrained(str(other))
    a, b = load_causal_lm(base), load_causal_lm(other)
    prompts = ["\n\nHuman: Tell me about cats.\n\nAssistant:", "\n\nHuman: Hi\n\nAssistant:"]
    comps = [[" Sure! Here is a short note.", " No."], [" Hello there, friend.", " Hi."]]
    lp, lq, kl = text_pair_stats(a, b, tok, prompts, comps, 128, 32, batch_size=3,
                                 kl_temperature=0.8)
    ref_a = text_logps(a, tok, prompts, comps, 128, 32, 3)
    ref_b = text_logps(b, tok, prompts, comps, 128, 32, 3)
    for got, want in ((lp, ref_a), (lq, ref_b)):
        assert [len(x) for x in got] == [2, 2]
        for g, w in zip(sum(got, []), sum(want, [])):
            assert g == pytest.approx(w, abs=1e-4)
    assert all(v > 0 for v in sum(kl, []))
    same = text_pair_stats(a, a, tok, prompts, comps, 128, 32, 3, kl_temperature=0.8)[2]
    assert max(sum(same, [])) < 1e-6
