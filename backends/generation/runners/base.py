"""What a runner sees of a turn, and what it must do: the two small protocols every runner keeps to.

A runner turns a prompt's IDs into new token IDs with one model. It reports to
a ``Sink`` (``generation.sink.TurnSink`` in practice) and never sees the
handle, the queue or the screen.
"""

from __future__ import annotations

from typing import Protocol

from backends.core.params import SamplingParams
from backends.prompt.view import PromptView


class Sink(Protocol):
    stop_ids: list[int]  # end-of-turn tokens: generation ends after one of them
    captured: list[int] | None  # what ``capture`` kept, once it was called
    #: Set by an engine that knows: how far the prompt could be checked ("ids", "count", "none")
    #: and why the turn ended ("eos", "length"), when no end-of-turn token says so.
    check: str
    ended: str | None

    @property
    def stopped(self) -> bool:
        """True once the turn was asked to stop: end before the next token."""

    def capture(self, ids) -> None:
        """The IDs the model's first forward call received (later calls are ignored)."""

    def reused(self, tokens: int, cache=None) -> None:
        """How many of the prompt's first tokens came from the prompt cache (``cache``: the runner's
        ``PromptCache``, which says why it keeps nothing when it does not)."""

    #: Builds each token's TokenInfo from logits (``runners.logprobs.TokenScorer``); None: not asked for.
    scorer: object | None

    def token(self, token_id: int, info=None) -> None:
        """One generated token, as soon as it is known (with its TokenInfo when there is one)."""

    def text(self, delta: str, token_id: int | None = None, info=None) -> None:
        """A piece of the reply that came as text (a server's stream), with its token ID when known."""

    def usage(self, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        """The engine's own token counts."""

    def echoed(self, ids) -> None:
        """The engine's own account of the prompt it read."""


class Runner(Protocol):
    def run(self, model, view: PromptView, params: SamplingParams, sink: Sink) -> list[int]:
        """Generate a reply to ``view.ids``; returns the new token IDs (end-of-turn token included)."""
