"""A compared turn's pairs: the reference's reply against each other model's, token by token where the
two can be compared, and word by word always."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from backends.core.errors import UsageError
from backends.core.sequences import common_prefix
from backends.generation.compare.figures import PairFigures
from backends.generation.compare.pairs import COMPARE_CHUNK, Reading, check_comparable, compare_reply
from backends.generation.compare.replies import ReplyRun
from backends.generation.compare.words import WordDiff, word_diff


@dataclass(frozen=True)
class PairOutcome:
    """The reference (``reference``) against model ``other``: token figures, or the one line saying why
    there are none (``note``); the word diff of their replies; and the first reply token where the
    other's own reply leaves the reference's (None: the same IDs), when their IDs mean the same."""

    reference: int
    other: int
    words: WordDiff
    figures: PairFigures | None = None
    note: str | None = None
    first_reply_difference: int | None = None

    def to_json(self) -> dict:
        data = {"reference": self.reference, "other": self.other}
        if self.figures is not None:
            data.update(self.figures.to_json())
            data["first_reply_difference"] = self.first_reply_difference
        else:
            data["note"] = self.note
        data["word_diff"] = self.words.to_json()
        return data


def compare_turn(runs: list[ReplyRun], stop: threading.Event | None = None, *, reference: int = 0,
                 chunk: int = COMPARE_CHUNK, top_k: int = 0) -> list[PairOutcome]:
    """Each other run against ``runs[reference]``, in order: all comparable models read the reference's
    reply together (one forward over prompt + reply per model); the others get a note."""
    ref = runs[reference]
    others = [i for i in range(len(runs)) if i != reference]
    notes: dict[int, str] = {}
    if not ref.has_ids:
        notes = {i: "the reference's reply came as text without token IDs: nothing to read token by token"
                 for i in others}
    for i in others:
        if i in notes:
            continue
        try:
            check_comparable(ref.handle, runs[i].handle)
        except UsageError as err:
            notes[i] = str(err)
    comparable = [i for i in others if i not in notes]
    figures: dict[int, PairFigures] = {}
    if comparable:
        readings = [Reading(runs[i].handle, runs[i].prompt_ids, i) for i in comparable]
        found = compare_reply(Reading(ref.handle, ref.prompt_ids, reference), readings, ref.reply_ids, stop,
                              chunk=chunk, top_k=top_k)
        figures = dict(zip(comparable, found))
    outcomes = []
    for i in others:
        words = word_diff(ref.done.text if ref.done else "", runs[i].done.text if runs[i].done else "")
        if i in figures:
            outcomes.append(PairOutcome(reference, i, words, figures[i],
                                        first_reply_difference=_first_difference(ref.reply_ids, runs[i].reply_ids)))
        else:
            outcomes.append(PairOutcome(reference, i, words, note=notes[i]))
    return outcomes


def _first_difference(a: list[int], b: list[int]) -> int | None:
    shared = common_prefix(a, b)
    return None if shared == len(a) == len(b) else shared


def read_under_reference(runs: list[ReplyRun], stop: threading.Event | None = None, *, reference: int = 0,
                         chunk: int = COMPARE_CHUNK, top_k: int = 0) -> dict[int, PairFigures]:
    """Each other model's own reply read by itself and by the reference: per token of *that* reply,
    KL(P_model ‖ P_reference), top-1 agreement, and (``top_k``) the reference's likeliest tokens there;
    keyed by the model's index. Those that cannot be compared token by token are left out (the pairs
    of ``compare_turn`` say why)."""
    ref = runs[reference]
    found: dict[int, PairFigures] = {}
    for i, run in enumerate(runs):
        if i == reference or not run.has_ids or not run.reply_ids or (stop is not None and stop.is_set()):
            continue
        try:
            check_comparable(run.handle, ref.handle)
        except UsageError:
            continue
        (found[i],) = compare_reply(Reading(run.handle, run.prompt_ids, i), [Reading(ref.handle, ref.prompt_ids,
                                                                                     reference)],
                                    run.reply_ids, stop, chunk=chunk, top_k=top_k)
    return found
