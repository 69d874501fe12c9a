"""TurnSink: what every runner reports to.

It turns token IDs into TokenEvents (decoding text without splitting
characters, leaving stop tokens out of the text), timestamps them for the
statistics, watches memory, keeps the captured prompt IDs, and builds the
turn's one DoneEvent. Its decoder is the one accumulator of the reply text.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from backends.core.events import (
    CheckLevel,
    DoneEvent,
    Event,
    Stats,
    StopReason,
    TokenEvent,
    TokenInfo,
)
from backends.hardware.peak import TurnPeak
from backends.prompt.textstream import IncrementalDecoder


class TurnSink:
    """What a runner reports to (the ``Sink`` protocol of ``runners.base``).

    Runners call ``token()`` once per generated token and ``capture()`` with
    the IDs the model's first forward received; ``stopped`` says when to end.
    """

    def __init__(self, emit: Callable[[Event], None], decode, stop_ids: list[int],
                 stop_event: threading.Event, device, prompt_ids: list[int]) -> None:
        self._emit = emit
        self.stop_event = stop_event
        self.stop_ids = stop_ids
        self.prompt_ids = prompt_ids
        self.decoder = IncrementalDecoder(decode)
        self.captured: list[int] | None = None
        self.times: list[float] = []
        self.memory = TurnPeak(device)
        self.start = 0.0
        #: Set by a runner that knows better than the defaults (a server): how far the prompt could
        #: be checked, the engine's own token counts, and why it ended.
        self.check: CheckLevel = "ids"
        self.prompt_count: int | None = None
        self.completion_count: int | None = None
        self.ended: StopReason | None = None
        #: Per-token probabilities and alternatives, when asked for (``SamplingParams.top_logprobs``).
        self.scorer = None
        #: How many of the prompt's first tokens came from the prompt cache (None: the engine keeps
        #: none, or does not say), and why the last turn's cache could not be kept, if it was not.
        self.cached_tokens: int | None = None
        self.cache_note: str | None = None
        #: The tool calls a server read from the reply itself (``tool_calls``), when it did.
        self.calls: list[dict] | None = None
        #: Text that ends the reply where it appears (a stop word); ``_cut``: where it did.
        self.stop_texts: list[str] = []
        self._cut: int | None = None

    def begin(self) -> None:
        self.memory.start()
        self.start = time.perf_counter()

    def capture(self, ids) -> None:
        """The IDs the model's first forward call received; later calls are ignored."""
        if self.captured is None:
            self.captured = [int(i) for i in ids]

    def echoed(self, ids) -> None:
        """The engine's own account of the prompt it read (a server echoing it): it replaces what was sent."""
        self.captured = [int(i) for i in ids]

    def token(self, token_id: int, info: TokenInfo | None = None) -> None:
        now = time.perf_counter()
        self.times.append(now)
        if token_id not in self.stop_ids:  # end-of-turn tokens are not reply text
            self._emit(TokenEvent(int(token_id), self.decoder.push(int(token_id)), now, info))
            self._watch_stop_texts()
        if len(self.times) % 16 == 0:
            self.memory.sample()

    def given(self, token: TokenEvent) -> None:
        """A token the reply already has (a branch goes on from it): part of the reply, not generated
        now, so neither timed nor counted as new."""
        self._emit(TokenEvent(token.id, self.decoder.push(int(token.id)), time.perf_counter(), token.info))
        self._watch_stop_texts()

    def text(self, delta: str, token_id: int | None = None, info: TokenInfo | None = None) -> None:
        """A piece of the reply that came as text (a server's stream), with its token ID when known."""
        now = time.perf_counter()
        self.times.append(now)
        self._emit(TokenEvent(token_id, self.decoder.add_text(delta), now, info))
        self._watch_stop_texts()

    def _watch_stop_texts(self) -> None:
        """A stop word written: the turn ends there (the runner sees ``stopped``), its text before it."""
        if self.stop_texts and self._cut is None:
            text = self.decoder.text
            found = [text.find(s) for s in self.stop_texts if s in text]
            if found:
                self._cut = min(found)

    def reused(self, tokens: int, cache=None) -> None:
        """``tokens`` of the prompt come from the prompt cache (``cache``, whose note says why it
        keeps nothing, when it does not)."""
        self.cached_tokens = int(tokens)
        if cache is not None:
            self.cache_note = cache.why_not if cache.enabled else "the prompt cache is off (--prompt-cache on)"

    def usage(self, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        """The engine's own counts (a server's ``usage``)."""
        self.prompt_count = prompt_tokens
        self.completion_count = completion_tokens

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set() or self._cut is not None

    def tool_calls(self, calls: list[dict]) -> None:
        """The calls the engine read from the reply (a server's ``tool_calls``)."""
        self.calls = list(calls)

    @property
    def reply(self) -> str:
        """The reply so far."""
        return self.decoder.text

    def finish(self, new_ids: list[int]) -> DoneEvent:
        end = time.perf_counter()
        tail = self.decoder.flush()
        new_tokens = self.completion_count if self.completion_count is not None else len(new_ids) or len(self.times)
        stats = Stats(prompt_tokens=self.prompt_count if self.prompt_count is not None else len(self.prompt_ids),
                      new_tokens=new_tokens, total_s=end - self.start, cached_tokens=self.cached_tokens)
        if self.times:
            stats.ttft_s = self.times[0] - self.start
            if len(self.times) > 1 and self.times[-1] > self.times[0]:
                stats.decode_tok_s = (len(self.times) - 1) / (self.times[-1] - self.times[0])
        stats.peak_memory_bytes, stats.memory_kind = self.memory.peak()
        reason: StopReason
        text = self.decoder.text
        if self.stop_event.is_set():
            reason = "stopped"
        elif self._cut is not None:  # the model wrote a stop word: a finished reply, up to it
            reason, text, tail = "eos", text[:self._cut], ""
        elif self.ended is not None:
            reason = self.ended
        elif new_ids and new_ids[-1] in self.stop_ids:
            reason = "eos"
        else:
            reason = "length"
        return DoneEvent(stats=stats, stop_reason=reason, text=text, tail=tail,
                         prompt_ids=list(self.prompt_ids), captured_ids=self.captured,
                         prompt_check=self.check, prompt_count=self.prompt_count, cache_note=self.cache_note,
                         tool_calls=self.calls)

    def failed(self, line: str) -> DoneEvent:
        """The DoneEvent of a turn that ended in an error: the text so far is kept, whole."""
        tail = self.decoder.flush()  # first: the text then holds the characters the decoder held back
        return DoneEvent(stats=Stats(prompt_tokens=len(self.prompt_ids), new_tokens=len(self.times)),
                         stop_reason="error", text=self.decoder.text, tail=tail,
                         prompt_ids=list(self.prompt_ids), captured_ids=self.captured, error=line,
                         prompt_check=self.check if self.captured is not None else "none",
                         prompt_count=self.prompt_count)
