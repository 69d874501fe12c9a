"""PromptView: the exact prompt a model receives, and what was cut to build it.

A view is produced by a prompt family (``backends.families``) from a list of
messages. It holds the rendered text, the token IDs, one readable piece per
token, which tokens are special, which tokens belong to which message, what the
family's truncation rule dropped, and sanity warnings. A view never changes once built:
the IDs the model's first forward call really received come with the turn's DoneEvent,
they are the ground truth, and ``first_mismatch`` says where they differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Iterable, Literal


#: The ``Span.index`` of the tokens that render the tool definitions (role "tools").
TOOLS_SPAN = -2


@dataclass(frozen=True)
class Span:
    """Tokens ``[start, end)`` render message ``index`` (a ``role`` message).

    ``index`` is the position in the conversation's message list; ``-1`` marks
    tokens that belong to no message (the generation prompt, BOS, framing),
    ``TOOLS_SPAN`` the tool definitions.
    """

    index: int
    role: str
    start: int
    end: int


DropRule = Literal["family", "budget"]


@dataclass(frozen=True)
class Dropped:
    """A message (or the head of one, when ``partial``) left out by truncation."""

    index: int
    role: str
    tokens: int
    partial: bool = False
    reason: str = ""
    #: Which rule left it out: the model family's own truncation, or llm-tui's prompt budget
    #: (``--max-prompt-tokens``, ``/budget``), which drops the oldest messages.
    by: DropRule = "family"


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
    #: "full" sends the whole prompt; "incremental" sends only the new turn
    #: (a cache of earlier turns is reused), as ChatGLM3's stream_chat does.
    mode: str = "full"
    #: The messages the prompt holds (those truncation kept): what a chat-only server is sent.
    messages: list[dict] = field(default_factory=list)
    #: The tool definitions the prompt offers (OpenAI function schemas): what a chat-only server is sent.
    tools: list[dict] | None = None
    #: Text that ends the reply where the model writes it (Qwen v1's ReAct "Observation:", where the
    #: tool's result goes); the reply's text stops before it.
    stop_texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.pieces) == len(self.special)):
            raise ValueError("ids, pieces and special must have the same length")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dropped_tokens(self) -> int:
        return sum(d.tokens for d in self.dropped)

    def first_mismatch(self, other: Iterable[int]) -> int | None:
        """First position where ``other`` (e.g. the captured IDs) differs, else None.

        A length difference counts as a mismatch at the shorter length.
        """
        got = list(other)
        for pos, (a, b) in enumerate(zip(self.ids, got)):
            if a != b:
                return pos
        if len(got) != len(self.ids):
            return min(len(got), len(self.ids))
        return None

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("messages")  # the caller's own input, not part of the prompt's description
        data["tokens"] = len(self.ids)
        data["dropped_tokens"] = self.dropped_tokens
        return data


@lru_cache(maxsize=1)
def byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet read backwards: the byte each vocabulary character stands for."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


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
