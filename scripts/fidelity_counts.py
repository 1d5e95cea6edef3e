"""How many examples of a real HH folder each difference from the original code touches
(docs/DIFFERENCES.md states these counts).

    .venv/bin/python scripts/fidelity_counts.py ../shared/hh-rlhf-sample/harmless-base \
        --tokenizer .cache/smollm2 --gguf SmolLM2-135M-Instruct.Q4_1.gguf

The lengths need the model's tokenizer (Pythia's GPT-NeoX BPE in the paper; any tokenizer
folder, or a GGUF file in one, here): counted with config.yaml's sizes (max_len 512, max_gen_len
200, a 312-token sampling window, eval.num_prompts 512), in exoflow's token layout
(exoflow.batching.encode_pair; no BOS for GPT-NeoX-style tokenizers).

* ``sft_no_eos``: chosen responses of max_gen_len tokens or more: the original appends EOS before
  the cut, so these SFT targets end without EOS (config.yaml: eos_after_cut false, the same);
* ``sft_all_masked``: SFT sequences that fill max_len with no padding: the original's
  ``labels[-pad_len:] = -100`` with pad_len 0 masks every label, so they train on nothing (its
  bug; exoflow trains on their responses);
* ``prompts_over_window``: prompts longer than the 312-token window, whose head the original's
  pipeline (and config.yaml) drops; for the evaluated test prompts the original's
  ``inference.py`` then slices the decoded text by the untruncated prompt's length, cutting
  into (or wholly away) the completion (its bug; exoflow decodes the tokens after the prompt);
* ``rejected_extra_spaces`` / ``trailing_whitespace``: responses the original's preproc.py
  keeps with their leading spaces (the rejected one) or trailing whitespace (both), where
  exoflow writes one leading space and none trailing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exoflow import hh  # noqa: E402
from exoflow.data import iter_local, preprocess  # noqa: E402


def original_responses(raw: dict):
    """(chosen, rejected) as the original's preproc.py writes them, from the differing
    Assistant turn that exoflow's turn split finds (None when the pair is dropped)."""
    c_turns, r_turns = hh.split_turns(raw["chosen"]), hh.split_turns(raw["rejected"])
    i = 0
    while i < min(len(c_turns), len(r_turns)) and c_turns[i] == r_turns[i]:
        i += 1
    if i >= min(len(c_turns), len(r_turns)):
        return None
    c, r = c_turns[i].text, r_turns[i].text
    return " " + c.lstrip(), r  # "Assistant: " + lstrip() for chosen; rejected as written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", help="a local HH folder: train.jsonl[.gz], test.jsonl[.gz]")
    ap.add_argument("--tokenizer", required=True, help="a tokenizer folder")
    ap.add_argument("--gguf", default=None, help="a GGUF file in that folder to read it from")
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--max-gen-len", type=int, default=200)
    ap.add_argument("--window", type=int, default=312)
    ap.add_argument("--eval-prompts", type=int, default=512)
    args = ap.parse_args(argv)
    from transformers import AutoTokenizer

    from exoflow.batching import bos_ids, encode_pair

    kw = {"gguf_file": args.gguf} if args.gguf else {}
    tok = AutoTokenizer.from_pretrained(args.tokenizer, **kw)
    bos = len(bos_ids(tok))
    out = {"tokenizer": f"{args.tokenizer}{'/' + args.gguf if args.gguf else ''}"}
    for split in ("train", "test"):
        rows = list(iter_local(args.folder, split, "error"))
        pairs, _ = preprocess(iter(rows))
        n_prompt = [len(tok(p["prompt"], add_special_tokens=False)["input_ids"]) + bos
                    for p in pairs]
        c = {"pairs": len(pairs)}
        if split == "train":
            resp = [len(encode_pair(tok, p["prompt"], p["chosen"], 10 ** 6, 10 ** 6,
                                    add_eos=False)) - n for p, n in zip(pairs, n_prompt)]
            c["sft_no_eos"] = sum(r >= args.max_gen_len for r in resp)
            # prompt + (response + EOS) cut to max_gen_len, before the left cut to max_len
            c["sft_all_masked"] = sum(n + min(r + 1, args.max_gen_len) >= args.max_len
                                      for n, r in zip(n_prompt, resp))
            c["prompts_over_window"] = sum(n > args.window for n in n_prompt)
        else:
            evaluated = n_prompt[:args.eval_prompts]
            c["evaluated_prompts"] = len(evaluated)
            c["prompts_over_window"] = sum(n > args.window for n in evaluated)
        orig = [original_responses(raw) for _, raw in rows]
        kept = [o for o in orig if o is not None]
        c["rejected_extra_spaces"] = sum(r.startswith("  ") for _, r in kept)
        c["trailing_whitespace"] = sum(x != x.rstrip() for o in kept for x in o)
        out[split] = c
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
