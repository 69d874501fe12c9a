"""Generation: a running turn, as an iterator of typed events ending with one DoneEvent."""

from __future__ import annotations

import queue
import threading
from typing import Iterator

from backends.core.events import DoneEvent, Event
from backends.prompt.view import PromptView

_END = object()


class Generation:
    """A running turn. Iterate it (or ``drain`` it) for events; ``stop()`` ends it between two tokens.

    The generation thread calls ``emit`` for each event and ``finish`` once;
    any thread may read ``text``, the reply so far.
    """

    def __init__(self, view: PromptView, stop_event: threading.Event) -> None:
        self.view = view
        self.stop_event = stop_event
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.done: DoneEvent | None = None
        self._text_so_far = lambda: ""

    def stop(self) -> None:
        self.stop_event.set()

    # -- the producer side (the generation thread) ------------------------------------------------

    def emit(self, event: Event) -> None:
        self._queue.put(event)

    def follow_text(self, text_so_far) -> None:
        """Where ``text`` comes from: the one accumulator of the reply (the turn's decoder)."""
        self._text_so_far = text_so_far

    def finish(self, done: DoneEvent) -> None:
        self.done = done
        self._queue.put(done)
        self._queue.put(_END)

    # -- the consumer side -------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The reply so far (complete characters only)."""
        return self.done.text if self.done is not None else self._text_so_far()

    def __iter__(self) -> Iterator[Event]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            yield item

    def drain(self, timeout: float) -> list[Event]:
        """Wait up to ``timeout`` s for one event, then take all that are ready.

        Returns [] on timeout; the list ends with the DoneEvent when the turn is over.
        """
        items: list[Event] = []
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return items
        while True:
            if item is _END:
                self._queue.put(_END)  # keep the end visible to later calls
                return items
            items.append(item)
            if isinstance(item, DoneEvent):
                return items
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items

    def join(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)
