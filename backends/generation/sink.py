"""TurnSink: what every runner reports to.

It turns token IDs into TokenEvents (decoding text without splitting
characters, leaving stop tokens out of the text), timestamps them for the
statistics, watches memory, keeps the captured prompt IDs, and ends the
turn with one DoneEvent."""

from __future__ import annotations

import time

from backends.core.events import DoneEvent, Stats, TokenEvent
from backends.generation.stream import Generation
from backends.hardware.peak import TurnPeak
from backends.prompt.textstream import IncrementalDecoder


class TurnSink:
    """What a runner reports to: tokens as they come, the captured prompt IDs.

    It turns token IDs into TokenEvents (decoding text without splitting
    characters, leaving stop tokens out of the text), timestamps them for the
    statistics and watches memory. Runners call ``token()`` once per generated
    token and ``capture()`` with the IDs the model's first forward received.
    """

    def __init__(self, generation: Generation, decode, stop_ids: list[int], device) -> None:
        self.generation = generation
        self.stop_event = generation.stop_event
        self.stop_ids = stop_ids
        self.decoder = IncrementalDecoder(decode)
        self.captured: list[int] = []
        self.times: list[float] = []
        self.memory = TurnPeak(device)
        self.start = 0.0

    def begin(self) -> None:
        self.memory.start()
        self.start = time.perf_counter()

    def capture(self, ids) -> None:
        if not self.captured:
            self.captured.extend(int(i) for i in ids)

    def token(self, token_id: int) -> None:
        now = time.perf_counter()
        self.times.append(now)
        if token_id not in self.stop_ids:  # end-of-turn tokens are not reply text
            self.generation._emit(TokenEvent(int(token_id), self.decoder.push(int(token_id)), now))
        if len(self.times) % 16 == 0:
            self.memory.sample()

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()

    def finish(self, new_ids: list[int]) -> DoneEvent:
        end = time.perf_counter()
        tail = self.decoder.flush()
        if tail:
            self.generation._emit(TokenEvent(-1, tail, end))
        view = self.generation.view
        stats = Stats(prompt_tokens=len(view.ids), new_tokens=len(new_ids), total_s=end - self.start)
        if self.times:
            stats.ttft_s = self.times[0] - self.start
            if len(self.times) > 1 and self.times[-1] > self.times[0]:
                stats.decode_tok_s = (len(self.times) - 1) / (self.times[-1] - self.times[0])
        stats.peak_memory_bytes, stats.memory_kind = self.memory.peak()
        if self.stopped:
            reason = "stopped"
        elif new_ids and new_ids[-1] in self.stop_ids:
            reason = "eos"
        else:
            reason = "length"
        return DoneEvent(stats=stats, stop_reason=reason, text=self.decoder.text,
                         prompt_ids=list(view.ids), captured_ids=list(self.captured))
