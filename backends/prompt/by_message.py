"""Several models' prompts for one conversation, set side by side message by message.

Families render the same messages into different tokens (another template,
another vocabulary); what is comparable across them is each message's share.
Tokens that belong to no message (BOS, the generation prompt, framing) form
one row of their own, last.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.prompt.view import PromptView

#: The row index of the tokens that belong to no message.
FRAMING = -1


@dataclass(frozen=True)
class MessageRow:
    """Message ``index`` (``FRAMING``: no message) with ``role``: its tokens in each prompt, in the
    order of the views; None where that prompt does not hold it (truncation dropped it)."""

    index: int
    role: str
    tokens: tuple[int | None, ...]


def tokens_by_message(view: PromptView) -> dict[int, int]:
    counts: dict[int, int] = {}
    for span in view.spans:
        counts[span.index] = counts.get(span.index, 0) + span.end - span.start
    covered = sum(counts.values())
    if covered < len(view.ids):  # tokens no span claims are framing too
        counts[FRAMING] = counts.get(FRAMING, 0) + len(view.ids) - covered
    return counts


def aligned_counts(views: list[PromptView]) -> list[MessageRow]:
    """One row per message any of the prompts holds, in conversation order, then the framing."""
    counts = [tokens_by_message(v) for v in views]
    roles: dict[int, str] = {}
    for view in views:
        for span in view.spans:
            roles.setdefault(span.index, span.role)
    indexes = sorted(i for i in set().union(*counts) if i != FRAMING) if counts else []
    rows = [MessageRow(i, roles.get(i, "?"), tuple(c.get(i) for c in counts)) for i in indexes]
    if any(FRAMING in c for c in counts):
        rows.append(MessageRow(FRAMING, "framing", tuple(c.get(FRAMING, 0) for c in counts)))
    return rows
