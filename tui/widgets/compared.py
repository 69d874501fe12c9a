"""A compared turn: two to four models' replies to one message, side by side (stacked in a narrow
terminal), each with its own stats line; under them how far each is from the reference.

``d`` colours each reply by its divergence from the reference at each of its
tokens (KL between the two models' next-token distributions there, read
teacher-forced after the replies ended); an underline marks a token where
the two models' likeliest tokens differ. On the token cursor the inspector
sets the two models' likeliest tokens side by side (``compared_output_lines``).
Model text goes into ``Content`` and ``rich.text.Text`` objects, never markup.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Static

from backends.core.events import Alternative
from backends.core.sanitize import visible_text

from .palette import DEFAULT_PALETTE, Palette
from .reply import Reply
from .token_view import is_chosen
from .visible import mark_whitespace, printable

#: (lowest KL in nats, background, legend label), largest first; below the last, plain.
KL_BUCKETS: tuple[tuple[float, str, str], ...] = (
    (0.5, "$error-muted", ">0.5"),
    (0.1, "$warning-muted", "0.1–0.5"),
    (0.01, "$primary-muted", "0.01–0.1"),
)


def divergence_style(kl: float | None, agree: bool) -> str:
    """``kl`` None: infinite (saved as null: the other model rules the token out)."""
    kl = math.inf if kl is None else kl
    style = next((f"on {colour}" for lowest, colour, _ in KL_BUCKETS if kl >= lowest), "")
    return f"{style} underline".strip() if not agree else style


def divergence_styles(tokens: list, kl: list[float], agree: list[bool]) -> list[str]:
    """One style per token: the figures cover the tokens that have IDs, in order."""
    styles, k = [], 0
    for token in tokens:
        if token.id is None or k >= len(kl):
            styles.append("")
            continue
        styles.append(divergence_style(kl[k], agree[k]))
        k += 1
    return styles


def divergence_legend() -> Content:
    parts: list = [("KL from the reference: ", "dim"), "≤0.01 "]
    for _, colour, label in reversed(KL_BUCKETS):
        parts += [(f" {label} ", f"on {colour}"), " "]
    parts += [("top-1 differs", "underline"), (" · v walks, d hides", "dim")]
    return Content.assemble(*parts)


class ComparedTurn(Vertical):
    """The panes of one compared turn, the line above them (who, and how they ran), and the
    figures under them. Pane 0 is the reference; ``kept`` is the pane the conversation goes on from."""

    def __init__(self, labels: list[str], schedule_line: str, replies: list[dict] | None = None) -> None:
        """``replies``: each pane's ``Reply`` arguments, for a turn that has ended (one saved)."""
        super().__init__(classes="compared")
        self.labels = labels
        replies = replies or [{} for _ in labels]
        self.panes = [Reply(label, classes="pane", **reply) for label, reply in zip(labels, replies)]
        for number, pane in enumerate(self.panes, start=1):
            pane.pane_number = number
        names = " · ".join(f"{n} {label}{' (reference)' if n == 1 else ''}" for n, label in enumerate(labels, 1))
        self._heading = Static(Content(visible_text(f"compared: {names} · {schedule_line}")), classes="heading")
        self._figures = Static(classes="figures")
        self._figures.display = False
        self.kept: int | None = None
        self.message_id: int | None = None  # the saved message: the kept reply in place, the others its branches
        #: Per pane: the figures drawn on its tokens (kl, top1_agree, the other model's top K as
        #: ``Alternative`` lists) and the label of the model it is set against.
        self.divergence: dict[int, dict] = {}
        self.coloured = False
        self._kept_at_mount: int | None = None  # a saved turn's kept pane, marked once the panes are there

    @classmethod
    def saved(cls, labels: list[str], replies: list[dict], kept: int, message_id: int | None) -> "ComparedTurn":
        """A compared turn as it was saved: each pane's reply (``Reply``'s arguments) and figures
        (``stats.compare``: the lines under the panes, each pane's divergence)."""
        first = ((replies[0].get("stats") or {}).get("compare") or {}) if replies else {}
        turn = cls(labels, first.get("schedule") or "reopened", replies)
        turn.message_id = message_id
        for index, reply in enumerate(replies):
            figures = ((reply.get("stats") or {}).get("compare") or {})
            if index == 0 and figures.get("lines"):
                turn._figures.update(Content(visible_text("\n".join(figures["lines"]))))
                turn._figures.display = True
            d = figures.get("divergence")
            if d and d.get("other") is not None and d["other"] < len(labels):
                turn.divergence[index] = {
                    "kl": d["kl"], "agree": d["agree"], "other": d["other"], "label": labels[d["other"]],
                    "top": [[Alternative(i, piece, v) for i, piece, v in row] for row in d.get("top") or []]}
        turn._kept_at_mount = kept
        return turn

    def on_mount(self) -> None:
        if self._kept_at_mount is not None:
            self.keep(self._kept_at_mount)

    def compose(self):
        yield self._heading
        with Horizontal(classes="panes"):
            yield from self.panes
        yield self._figures

    def show_figures(self, lines: list[str]) -> None:
        self._figures.update(Content(visible_text("\n".join(lines))))
        self._figures.display = bool(lines)

    def keep(self, index: int) -> None:
        """Mark pane ``index`` as the reply the conversation goes on from."""
        self.kept = index
        for number, pane in enumerate(self.panes):
            pane.set_class(number == index, "-kept")
            pane.kept_note = "kept: the conversation goes on from it" if number == index else ""
            pane.refresh_stats()

    def colour(self, on: bool, cursor_pane: Reply | None = None, cursor: int | None = None, *,
               probability: bool = False) -> bool:
        """Colour each pane by its divergence, or (off) as the chat colours replies (``probability``);
        False when nothing was measured."""
        if not self.divergence:
            return False
        self.coloured = on
        for index, pane in enumerate(self.panes):
            figures = self.divergence.get(index)
            pane.token_styles = divergence_styles(pane.tokens, figures["kl"], figures["agree"]) \
                if on and figures is not None else None
            pane.show_tokens(colour=probability, cursor=cursor if pane is cursor_pane else None)
        return True


def compared_turn_of(reply: Reply) -> ComparedTurn | None:
    node = reply.parent
    while node is not None:
        if isinstance(node, ComparedTurn):
            return node
        node = node.parent
    return None


def compared_output_lines(tokens: list, index: int, width: int, figures: dict, label: str,
                          palette: Palette = DEFAULT_PALETTE) -> list[Text]:
    """The inspector's output view for a compared reply: the token under the cursor, the divergence
    there, and this model's likeliest tokens beside the other model's (``figures['label']``)."""
    token = tokens[index]
    position = sum(1 for t in tokens[:index] if t.id is not None)
    head = Text(f"token {index + 1:,} of {len(tokens):,} · {mark_whitespace(printable(token.text)) or '∅'}",
                palette.muted, no_wrap=True, overflow="crop")
    lines = [head]
    if token.id is None or position >= len(figures["kl"]):
        lines.append(Text("not compared at this token", palette.muted, no_wrap=True, overflow="crop"))
        return lines
    kl, agree = figures["kl"][position], figures["agree"][position]
    kl = math.inf if kl is None else kl
    line = Text(no_wrap=True, overflow="crop")
    line.append(f"KL {kl:.4f} nats", palette.warning if kl >= KL_BUCKETS[-1][0] else "")
    line.append(" · likeliest tokens agree" if agree else " · likeliest tokens differ",
                palette.ok if agree else palette.error)
    lines.append(line)
    column = max(12, (width - 1) // 2)
    ours = [(a.piece, a.logprob, is_chosen(a, token)) for a in (token.info.top if token.info else [])]
    theirs = [(a.piece, a.logprob, a.id == token.id) for a in figures["top"][position]] \
        if position < len(figures["top"]) else []
    lines.append(_row(_cell(label, column, palette.role), _cell(figures["label"], column, palette.role)))
    for k in range(max(len(ours), len(theirs))):
        left = _alternative(k + 1, ours[k], column, palette) if k < len(ours) else _cell("", column)
        right = _alternative(k + 1, theirs[k], column, palette) if k < len(theirs) else _cell("", column)
        lines.append(_row(left, right))
    if not ours:
        lines.append(Text("(this engine gave no alternatives for the reply's own tokens)", palette.muted,
                          no_wrap=True, overflow="crop"))
    return lines


def _row(left: Text, right: Text) -> Text:
    row = Text(no_wrap=True, overflow="crop")
    row.append_text(left)
    row.append(" ")
    row.append_text(right)
    return row


def _cell(text: str, width: int, style="") -> Text:
    cell = Text(text[:width].ljust(width), style, no_wrap=True, overflow="crop")
    return cell


def _alternative(number: int, alternative: tuple, width: int, palette: Palette) -> Text:
    piece, logprob, chosen = alternative
    p = math.exp(logprob) if logprob is not None else 0.0
    label = (mark_whitespace(printable(piece)) or "∅")[: max(1, width - 11)]
    cell = Text(no_wrap=True, overflow="crop")
    cell.append(f"{number} ", palette.role if chosen else palette.muted)
    cell.append(label.ljust(max(1, width - 11)), palette.special if chosen else "")
    cell.append(f" {p:6.1%}")
    return cell
