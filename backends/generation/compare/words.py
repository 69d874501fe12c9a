"""Two replies compared as text, word by word: all there is when the vocabularies differ, and useful when not."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

_WORDS = re.compile(r"\S+")


@dataclass(frozen=True)
class WordDiff:
    """``ops``: (``equal``|``replace``|``delete``|``insert``, the reference's words, the other's words),
    in order; ``similarity``: difflib's ratio over words (1.0: the same words in the same order)."""

    ops: list[tuple[str, str, str]]
    similarity: float
    words_ref: int
    words_other: int

    @property
    def first_difference(self) -> int | None:
        """The index of the first reference word that differs (its word count when it is a prefix), or None."""
        at = 0
        for op, ref, _other in self.ops:
            if op != "equal":
                return at
            at += len(ref.split())
        return None

    def inline(self) -> str:
        """One line in ``git diff --word-diff`` style: ``[-removed-]{+added+}`` around the changes."""
        parts = []
        for op, ref, other in self.ops:
            if op == "equal":
                parts.append(ref)
                continue
            if ref:
                parts.append(f"[-{ref}-]")
            if other:
                parts.append(f"{{+{other}+}}")
        return " ".join(parts)

    def to_json(self) -> dict:
        return {"similarity": self.similarity, "words_ref": self.words_ref, "words_other": self.words_other,
                "first_difference": self.first_difference,
                "ops": [{"op": op, "ref": ref, "other": other} for op, ref, other in self.ops]}


def word_diff(reference: str, other: str) -> WordDiff:
    a, b = _WORDS.findall(reference), _WORDS.findall(other)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    ops = [(op, " ".join(a[i1:i2]), " ".join(b[j1:j2])) for op, i1, i2, j1, j2 in matcher.get_opcodes()]
    return WordDiff(ops=ops, similarity=matcher.ratio(), words_ref=len(a), words_other=len(b))
