"""Tiny preference and alignment records."""

from __future__ import annotations

TOPICS = ["cats", "dogs", "rain", "bread", "music", "chess", "trains", "tea", "maps", "snow",
          "bees", "ships", "paint", "clocks", "rivers", "stars"]


def make_records(n: int, offset: int = 0) -> list[dict]:
    """Pairs where the chosen answer is polite and on topic, the rejected one rude.

    Every third rejected answer is the longer one, so "shorter wins" is not trivially 0 or 1.
    """
    recs = []
    for i in range(offset, offset + n):
        t = TOPICS[i % len(TOPICS)]
        recs.append({
            "prompt": f"\n\nHuman: Tell me about {t}, please ({i}).\n\nAssistant:",
            "chosen": f" Sure! Here is a short helpful note about {t}.",
            "rejected": (f" No, I will not talk about {t} with you at all, go away now."
                         if i % 3 == 0 else " No."),
        })
    return recs


def p2r_records(n=16) -> list[dict]:
    """As data/p2r: K = 2, [chosen, rejected], rewards [1, 0]."""
    return [{"prompt": r["prompt"], "completions": [r["chosen"], r["rejected"]],
             "rewards": [1.0, 0.0]} for r in make_records(n)]


def k4_records(n=16) -> list[dict]:
    """As data/rm_labels with 4 samples: K = 4 candidates with real-valued rewards."""
    out = []
    for i, r in enumerate(make_records(n)):
        out.append({"prompt": r["prompt"],
                    "completions": [r["chosen"], r["rejected"], r["chosen"] + " Thanks.", " Maybe."],
                    "rewards": [1.0 + 0.1 * i, -1.0, 0.5 - 0.2 * (i % 3), 0.1 * (i % 5)]})
    return out
