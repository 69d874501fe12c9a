"""Chunked prefill: the prompt goes through the model a chunk at a time, with the stop flag checked between.

A 100k-token prompt in one forward call cannot be stopped (Esc, Ctrl+Q, a
dropped SSH link) until it is done, and its working memory grows with the
whole prompt. In chunks, the engine returns within about one chunk's time of
a stop, and the working memory is bounded by the chunk. The chunk size is
chosen as it goes: each chunk aims at ``TARGET_SECONDS``, between
``CHUNK_MIN`` and ``PREFILL_CHUNK_MAX`` tokens (attention over a long context
makes later chunks slower, so they get smaller).

``PrefillCapture`` records the IDs each forward call of the prefill really
received and hands them to the sink once, in order: the ground truth the
inspector compares with the preview.
"""

from __future__ import annotations

import time
from typing import Callable

from backends.generation.runners.base import Sink
from backends.memory.kv import PREFILL_CHUNK_MAX

#: The smallest chunk (below it the per-call overhead dominates).
CHUNK_MIN = 64
#: The first chunk, before anything is measured.
CHUNK_FIRST = 256
#: How long one chunk should take: a stop is answered within about this.
TARGET_SECONDS = 0.25


class Stopped(Exception):
    """The turn was asked to stop during the prefill; ``cache`` holds the first ``fed`` tokens."""

    def __init__(self, cache=None, fed: int = 0) -> None:
        super().__init__("stopped during the prefill")
        self.cache = cache
        self.fed = fed


class ChunkSizer:
    """The next chunk's size, from how long the last one took."""

    def __init__(self, first: int = CHUNK_FIRST, largest: int = PREFILL_CHUNK_MAX) -> None:
        self.size = max(CHUNK_MIN, min(first, largest))
        self.largest = largest

    def took(self, tokens: int, seconds: float) -> None:
        if seconds <= 0 or tokens <= 0:
            return
        wanted = tokens * TARGET_SECONDS / seconds
        size = int(max(CHUNK_MIN, min(self.largest, wanted)))
        self.size = max(CHUNK_MIN, size - size % CHUNK_MIN)


def prefill(forward: Callable, ids, sink: Sink, *, keep_last: int = 0, sizer: ChunkSizer | None = None,
            cache=None, start: int = 0):
    """Feed ``ids`` (a 1 × N tensor) to ``forward(chunk, cache, start) -> (logits, cache)`` in chunks.

    ``cache`` already holds the first ``start`` tokens (a prompt cache kept from the last
    turn): only the rest is fed. The last ``keep_last`` tokens are left for the caller to
    feed (``generate()`` wants at least one). Returns ``(logits, cache, fed)``: the last
    chunk's logits (None when nothing was fed), the cache, and how many tokens it holds.
    Raises ``Stopped`` (with what was fed so far) when the sink was asked to stop between two
    chunks. A forward that gives no cache back cannot be chunked: the whole prompt then goes
    in one call.
    """
    sizer = sizer or ChunkSizer()
    total = ids.shape[1] - keep_last
    logits, fed = None, start
    while fed < total:
        if sink.stopped:
            raise Stopped(cache, fed)
        size = min(sizer.size, total - fed)
        started = time.perf_counter()
        logits, cache = forward(ids[:, fed:fed + size], cache, fed)
        sizer.took(size, time.perf_counter() - started)
        fed += size
        if cache is None and fed < total:  # no cache to carry on from: one call over everything
            if sink.stopped:
                raise Stopped()
            logits, cache = forward(ids[:, :total], None, 0)
            fed = total
    return logits, cache, fed


class PrefillCapture:
    """A forward pre-hook that collects the input IDs of the first ``calls`` forward calls
    (the prefill's chunks), then gives them to ``sink.capture`` and removes itself.

    ``finish()`` hands over what was collected if fewer calls came (a stop, an error).
    """

    def __init__(self, model, sink: Sink, calls: int | None = None, *, known: list[int] | None = None) -> None:
        self.sink = sink
        self.calls = calls
        #: The prompt's first IDs, read in an earlier turn and held in the prompt cache: the model
        #: received them then, and they come first in what it received.
        self.known = list(known or [])
        self.ids: list[int] = []
        self.seen = 0
        self._hook = model.register_forward_pre_hook(self._capture, with_kwargs=True)

    def expect(self, calls: int) -> None:
        """How many forward calls the prefill takes (known once it has been planned)."""
        self.calls = calls
        if self.seen >= calls:
            self.finish()

    def _capture(self, _module, args, kwargs) -> None:
        ids = kwargs.get("input_ids")
        if ids is None and args:
            ids = args[0]
        if ids is not None and hasattr(ids, "tolist"):
            self.ids.extend(ids[0].tolist() if ids.dim() > 1 else ids.tolist())
        self.seen += 1
        if self.calls is not None and self.seen >= self.calls:
            self.finish()

    def finish(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
            if self.seen:
                self.sink.capture(self.known + self.ids)
