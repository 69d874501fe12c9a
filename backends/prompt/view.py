"""PromptView: the exact prompt a model receives, and what was cut to build it.

A view is produced by a prompt family (``backends.families``) from a list of
messages. It holds the rendered text, the token IDs, one readable piece per
token, which tokens are special, which tokens belong to which message, what the
family's truncation rule dropped, and sanity warnings. After a turn has run,
``captured`` holds the IDs the model's first forward call really received; the
captured IDs are the ground truth and the view says where they differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable


@dataclass(frozen=True)
class Span:
    """Tokens ``[start, end)`` render message ``index`` (a ``role`` message).

    ``index`` is the position in the conversation's message list; ``-1`` marks
    tokens that belong to no message (the generation prompt, BOS, framing).
    """

    index: int
    role: str
    start: int
    end: int


@dataclass(frozen=True)
class Dropped:
    """A message (or the head of one, when ``partial``) left out by truncation."""

    index: int
    role: str
    tokens: int
    partial: bool = False
    reason: str = ""


@dataclass
class PromptView:
    family: str
    text: str
    ids: list[int]
    pieces: list[str]
    special: list[bool]
    spans: list[Span] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    max_context: int | None = None
    stop_ids: list[int] = field(default_factory=list)
    captured: list[int] | None = None
    #: "full" sends the whole prompt; "incremental" sends only the new turn
    #: (a cache of earlier turns is reused), as ChatGLM3's stream_chat does.
    mode: str = "full"

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.pieces) == len(self.special)):
            raise ValueError("ids, pieces and special must have the same length")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dropped_tokens(self) -> int:
        return sum(d.tokens for d in self.dropped)

    def first_mismatch(self, other: Iterable[int] | None = None) -> int | None:
        """First position where ``other`` (default: captured) differs, else None.

        A length difference counts as a mismatch at the shorter length.
        """
        got = list(self.captured if other is None else other)
        for pos, (a, b) in enumerate(zip(self.ids, got)):
            if a != b:
                return pos
        if len(got) != len(self.ids):
            return min(len(got), len(self.ids))
        return None

    @property
    def verified(self) -> bool | None:
        """True when captured IDs equal the preview, False when not, None before a run."""
        if self.captured is None:
            return None
        return self.first_mismatch() is None

    def span_of(self, position: int) -> Span | None:
        for span in self.spans:
            if span.start <= position < span.end:
                return span
        return None

    def to_json(self) -> dict:
        data = asdict(self)
        data["tokens"] = len(self.ids)
        data["dropped_tokens"] = self.dropped_tokens
        return data


def piece_from_bytes(raw: bytes) -> str:
    """Readable text of one token's bytes; bytes that are not whole UTF-8 show as <0xNN>."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        try:
            out.append(raw[i:].decode("utf-8"))
            break
        except UnicodeDecodeError as err:
            out.append(raw[i : i + err.start].decode("utf-8"))
            bad_end = i + err.end
            out.extend(f"<0x{b:02X}>" for b in raw[i + err.start : bad_end])
            i = bad_end
    return "".join(out)
