"""Raw Anthropic-HH dialogues -> preference pairs ``{prompt, chosen, rejected}``.

A raw pair holds two whole dialogues, ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``, that share
their first turns and differ from some Assistant turn on. As the original HH scripts do:

* split each dialogue into turns on ``\\n\\n``; a block that does not start with a role tag
  (``Human:``/``Assistant:``) belongs to the turn before it (multi-paragraph turns), and
  ``Humans:`` is normalised to ``Human:``;
* the prompt is the shared turns up to the first turn where the two differ, followed by
  ``\\n\\nAssistant:``; chosen/rejected are the two differing Assistant turns' texts, each with
  exactly one leading space and no trailing whitespace; later turns are ignored.

Pairs that cannot make a training example are dropped with a reason (counted by the caller):
see :data:`DROP_REASONS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HUMAN, ASSISTANT = "Human", "Assistant"
_TAG = re.compile(r"^(Humans?|Assistant):")
GLUED_MARKERS = ("Human: ", "Humans: ")  # inside an Assistant turn: rewritten to " "

DROP_REASONS = {
    "not_human_first": "a dialogue does not start with a Human turn",
    "identical": "chosen and rejected dialogues are the same turn for turn",
    "not_assistant_turn": "the first differing turn is not an Assistant turn in both dialogues",
    "empty_response": "the chosen or rejected response is empty or only whitespace",
}


@dataclass(frozen=True)
class Turn:
    role: str  # HUMAN or ASSISTANT
    text: str  # everything after "Role:", as written (usually starts with one space)
    unglued: bool = False  # a turn marker glued into it was rewritten (GLUED_MARKERS)

    def render(self) -> str:
        return f"\n\n{self.role}:{self.text}"


class Dropped(Exception):
    """A pair that is skipped; ``reason`` is a key of :data:`DROP_REASONS`."""

    def __init__(self, reason: str):
        super().__init__(DROP_REASONS[reason])
        self.reason = reason


def normalise(dialogue: str) -> str:
    """The dialogue with ``Humans:`` tags written ``Human:`` (the only rewrite we make)."""
    return "".join(t.render() for t in split_turns(dialogue))


def unglue(text: str) -> str:
    """An Assistant paragraph with the turn markers glued into it rewritten to a space."""
    for marker in GLUED_MARKERS:
        text = text.replace(marker, " ")
    return text


def split_turns(dialogue: str) -> list[Turn]:
    """Turns of a raw HH dialogue (an Assistant turn's first paragraph :func:`unglue`-d). Text
    before the first role tag is kept as a turn with role ``""`` so that callers can see (and
    drop) a dialogue that does not start right."""
    turns: list[Turn] = []
    for block in dialogue.split("\n\n"):
        m = _TAG.match(block)
        if m:
            role = ASSISTANT if m.group(1) == ASSISTANT else HUMAN
            text = block[m.end():]
            clean = unglue(text) if role == ASSISTANT else text
            turns.append(Turn(role, clean, clean != text))
        elif turns:
            last = turns[-1]
            turns[-1] = Turn(last.role, f"{last.text}\n\n{block}", last.unglued)
        elif block:
            turns.append(Turn("", block))
        # an empty block before the first tag is the usual leading "\n\n"
    return turns


def _response(text: str) -> str:
    text = text.strip()
    if not text:
        raise Dropped("empty_response")
    return " " + text


def to_pair(chosen: str, rejected: str, counts=None) -> dict:
    """``{prompt, chosen, rejected}`` from two raw dialogues, or raise :class:`Dropped`;
    ``counts`` (a Counter) gets ``glued_markers`` += 1 when a rewrite changed the pair, and
    ``line_ends`` += 1 when its ``\\r\\n`` (or ``\\r``) line ends were read as ``\\n``
    (exported on Windows, every such dialogue was dropped as ``not_human_first``)."""
    if "\r" in chosen or "\r" in rejected:  # Windows or old-Mac line ends: read as \n
        chosen, rejected = _unix_line_ends(chosen), _unix_line_ends(rejected)
        if counts is not None:
            counts["line_ends"] += 1
    c_turns, r_turns = split_turns(chosen), split_turns(rejected)
    if not c_turns or not r_turns or c_turns[0].role != HUMAN or r_turns[0].role != HUMAN:
        raise Dropped("not_human_first")
    i = 0
    while i < min(len(c_turns), len(r_turns)) and c_turns[i] == r_turns[i]:
        i += 1
    if i == len(c_turns) and i == len(r_turns):
        raise Dropped("identical")
    if i >= len(c_turns) or i >= len(r_turns) or c_turns[i].role != ASSISTANT \
            or r_turns[i].role != ASSISTANT:
        raise Dropped("not_assistant_turn")
    c, r = _response(c_turns[i].text), _response(r_turns[i].text)
    if c == r:  # the turns differed only in surrounding whitespace
        raise Dropped("identical")
    prompt = "".join(t.render() for t in c_turns[:i]) + f"\n\n{ASSISTANT}:"
    if counts is not None and any(t.unglued for t in [*c_turns[:i + 1], r_turns[i]]):
        counts["glued_markers"] += 1
    return {"prompt": prompt, "chosen": c, "rejected": r}


def _unix_line_ends(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def pair_to_rewards(pair: dict) -> dict:
    """A preference pair in the reward-labelled format used by alignment (rewards [1, 0])."""
    return {"prompt": pair["prompt"], "completions": [pair["chosen"], pair["rejected"]],
            "rewards": [1.0, 0.0]}
