"""Typed events a generation stream yields, and the per-turn statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Alternative:
    """A token the model might have produced at a position: its ID (None when the engine gives only
    the text), its text, and its log-probability under the model."""

    id: int | None
    piece: str
    logprob: float


@dataclass(frozen=True)
class TokenInfo:
    """How sure the model was of one generated token.

    ``logprob`` is under the model (the softmax of the raw logits);
    ``sampled_logprob`` under the distribution the token was really drawn from
    (after temperature, top-k, top-p, repetition penalty); ``rank`` is the
    token's place under the model (1: the likeliest); ``entropy`` is the
    model's distribution's, in nats; ``top`` the K likeliest tokens under the
    model, likeliest first. A figure an engine cannot give is None.
    """

    logprob: float
    sampled_logprob: float | None = None
    rank: int | None = None
    entropy: float | None = None
    top: tuple[Alternative, ...] = ()

    def to_json(self) -> dict:
        return {"logprob": self.logprob, "sampled_logprob": self.sampled_logprob, "rank": self.rank,
                "entropy": self.entropy, "top": [{"id": a.id, "piece": a.piece, "logprob": a.logprob}
                                                 for a in self.top]}


@dataclass(frozen=True)
class TokenEvent:
    """One generated token: its ID, the text it completes, and when it came.

    ``text`` can be empty when the token ends inside a multi-byte character; the
    text is released with the token that completes the character, so joining all
    ``text`` values never produces a replacement character. ``id`` is None when
    the engine streams text without IDs (a server's chat endpoint).
    """

    id: int | None
    text: str
    t: float
    info: TokenInfo | None = None  # with SamplingParams.top_logprobs > 0, where the engine can tell


@dataclass
class Stats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft_s: float | None = None  # time to first token
    decode_tok_s: float | None = None  # tokens/s after the first token
    total_s: float = 0.0
    peak_memory_bytes: int | None = None
    memory_kind: str = ""  # "cuda" (torch peak allocated) or "rss" (process)
    #: How many of the prompt's tokens came from a kept cache rather than being read now (the
    #: prompt cache, or a server's own prefix cache); None when the engine keeps none or does not say.
    cached_tokens: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


#: Why a turn ended.
StopReason = Literal["eos", "length", "stopped", "error"]
#: How far the prompt the engine read could be checked against the preview: its IDs, their number, or not at all.
CheckLevel = Literal["ids", "count", "none"]


@dataclass(frozen=True)
class DoneEvent:
    """The end of a turn, always the last event of a stream.

    ``text`` is the whole reply: the ``text`` of every TokenEvent joined, then
    ``tail`` (what the decoder still held back when the turn ended).
    ``captured_ids`` are the IDs the model's prefill really received, None
    when the engine cannot know them; ``prompt_check`` says how far the prompt
    could be checked, and ``prompt_count`` is the engine's own count of prompt
    tokens where it reports one (a server's ``usage``).
    """

    stats: Stats
    stop_reason: StopReason
    text: str
    tail: str = ""
    prompt_ids: list[int] = field(default_factory=list)
    captured_ids: list[int] | None = None
    error: str | None = None  # one clear line when stop_reason == "error"
    prompt_check: CheckLevel = "ids"
    prompt_count: int | None = None
    #: Why this engine read the prompt whole though a prompt cache was asked for (None: no such reason).
    cache_note: str | None = None
    #: Tool calls the engine itself read from the reply (a server's ``tool_calls``): each ``{"id",
    #: "name", "arguments"}``, the arguments as the server sent them (a JSON string). None: none said.
    tool_calls: list[dict] | None = None


Event = TokenEvent | DoneEvent


#: The figures ``stats_parts`` can show, in the order they are shown.
STAT_FIGURES = ("prompt", "cached", "new", "ttft", "rate", "total")


def stats_parts(stats: Stats | dict, figures: tuple[str, ...] = STAT_FIGURES) -> list[str]:
    """A turn's statistics as short phrases (``12 prompt tokens``, ``8 new tokens``, ``TTFT 120 ms``,
    ``11.2 tok/s``, ``0.80 s``), the ``figures`` asked for that are known, in a fixed order; the one
    wording used by the chat, the headless commands and the exports."""
    s = stats.to_json() if isinstance(stats, Stats) else dict(stats or {})
    out = []
    for figure in STAT_FIGURES:
        if figure not in figures:
            continue
        if figure == "prompt" and s.get("prompt_tokens"):
            out.append(f"{s['prompt_tokens']:,} prompt tokens")
        elif figure == "cached" and s.get("cached_tokens"):
            out.append(f"{s['cached_tokens']:,} prompt tokens from the cache")
        elif figure == "new" and s.get("new_tokens") is not None:
            out.append(f"{s['new_tokens']:,} new tokens")
        elif figure == "ttft" and s.get("ttft_s") is not None:
            out.append(f"TTFT {s['ttft_s'] * 1000:.0f} ms")
        elif figure == "rate" and s.get("decode_tok_s"):
            out.append(f"{s['decode_tok_s']:.1f} tok/s")
        elif figure == "total" and s.get("total_s"):
            out.append(f"{s['total_s']:.2f} s")
    return out
