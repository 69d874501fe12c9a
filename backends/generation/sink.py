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

from backends.core.events import DoneEvent, Event, Stats, StopReason, TokenEvent
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

    def begin(self) -> None:
        self.memory.start()
        self.start = time.perf_counter()

    def capture(self, ids) -> None:
        """The IDs the model's first forward call received; later calls are ignored."""
        if self.captured is None:
            self.captured = [int(i) for i in ids]

    def token(self, token_id: int) -> None:
        now = time.perf_counter()
        self.times.append(now)
        if token_id not in self.stop_ids:  # end-of-turn tokens are not reply text
            self._emit(TokenEvent(int(token_id), self.decoder.push(int(token_id)), now))
        if len(self.times) % 16 == 0:
            self.memory.sample()

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()

    @property
    def text(self) -> str:
        return self.decoder.text

    def finish(self, new_ids: list[int]) -> DoneEvent:
        end = time.perf_counter()
        tail = self.decoder.flush()
        stats = Stats(prompt_tokens=len(self.prompt_ids), new_tokens=len(new_ids), total_s=end - self.start)
        if self.times:
            stats.ttft_s = self.times[0] - self.start
            if len(self.times) > 1 and self.times[-1] > self.times[0]:
                stats.decode_tok_s = (len(self.times) - 1) / (self.times[-1] - self.times[0])
        stats.peak_memory_bytes, stats.memory_kind = self.memory.peak()
        reason: StopReason
        if self.stopped:
            reason = "stopped"
        elif new_ids and new_ids[-1] in self.stop_ids:
            reason = "eos"
        else:
            reason = "length"
        return DoneEvent(stats=stats, stop_reason=reason, text=self.decoder.text, tail=tail,
                         prompt_ids=list(self.prompt_ids), captured_ids=self.captured)

    def failed(self, line: str) -> DoneEvent:
        """The DoneEvent of a turn that ended in an error: the text so far is kept."""
        return DoneEvent(stats=Stats(prompt_tokens=len(self.prompt_ids), new_tokens=len(self.times)),
                         stop_reason="error", text=self.decoder.text, tail=self.decoder.flush(),
                         prompt_ids=list(self.prompt_ids), captured_ids=self.captured, error=line)
