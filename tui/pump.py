"""From a generation thread to the screen: tokens batched by time into typed messages.

The pump runs in a Textual thread worker. It drains the ``Generation``'s
queue and posts one ``TokensArrived`` per batch straight to the reply on
screen (about every 50 ms, slower when the reply asks for it through
``Pace``), and one ``TurnDone`` at the end, to the same queue: it bubbles up
to the app only after the reply has drawn every batch before it.
``App.call_from_thread`` is never used per token: it blocks the caller until
the UI has run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from textual.message import Message

from backends.core.events import DoneEvent, TokenEvent

from .messages import TokensArrived, TurnDone

#: How often streamed text is handed to the screen (20 Hz).
BATCH_INTERVAL = 0.05
#: How often a streaming reply is written to the database.
CHECKPOINT_INTERVAL = 1.0


class Pace:
    """How often the UI wants text, set by the UI thread and read by the worker.

    Drawing a batch costs the UI thread time, and a busy UI thread slows
    generation (they share the GIL); the chat measures that cost and asks for
    batches no faster than it can draw them cheaply. A float attribute is
    read and written atomically, so no lock is needed.
    """

    def __init__(self, interval: float = BATCH_INTERVAL) -> None:
        self.interval = interval


@dataclass
class PumpResult:
    done: DoneEvent
    last_token_t: float | None


def pump_generation(generation, post: Callable[[Message], object], turn: int, *,
                    cancelled: threading.Event | None = None,
                    checkpoint: Callable[[str], None] | None = None,
                    pace: Pace | None = None,
                    checkpoint_interval: float = CHECKPOINT_INTERVAL) -> PumpResult:
    """Read ``generation`` until it ends, posting batched messages; runs in a thread.

    ``post`` is the reply's own ``post_message``: ``TokensArrived`` stops
    there, ``TurnDone`` bubbles on to the app after it.
    ``cancelled`` (the worker's cancelled_event) stops the generation between
    two tokens. ``checkpoint(text)`` receives the reply so far (the
    generation's own text) about once a second, so a killed process loses at
    most a second of it. ``pace`` sets the time between batches (at least
    ``BATCH_INTERVAL``).
    """
    try:
        return _pump(generation, post, turn, cancelled, checkpoint, pace or Pace(), checkpoint_interval)
    except BaseException:
        # Nobody reads the turn any more: left alone it would run to max_new_tokens holding the model.
        generation.stop()
        raise


def _pump(generation, post, turn: int, cancelled, checkpoint, pace: Pace, checkpoint_interval: float) -> PumpResult:
    pending: list[str] = []
    pending_tokens = 0
    events: list[TokenEvent] = []
    last_post = last_save = time.monotonic()
    last_token_t: float | None = None
    done: DoneEvent | None = None
    stop_sent = False
    while done is None:
        if cancelled is not None and cancelled.is_set() and not stop_sent:
            generation.stop()
            stop_sent = True
        interval = max(pace.interval, BATCH_INTERVAL)
        waiting = bool(pending_tokens or pending)
        wait = interval - (time.monotonic() - last_post) if waiting else 0.1
        for event in generation.drain(max(wait, 0.001)):
            if isinstance(event, TokenEvent):
                if event.text:
                    pending.append(event.text)
                pending_tokens += 1
                events.append(event)
                last_token_t = event.t
            elif isinstance(event, DoneEvent):
                done = event
                if event.tail:
                    pending.append(event.tail)
        now = time.monotonic()
        if (pending_tokens or pending) and (done is not None or now - last_post >= interval):
            post(TokensArrived(turn, "".join(pending), pending_tokens, events))
            pending.clear()
            pending_tokens = 0
            events = []
            last_post = now
        if checkpoint is not None and done is None and now - last_save >= checkpoint_interval:
            last_save = now
            checkpoint(generation.text)
    post(TurnDone(turn, done, last_token_t, generation.view))
    return PumpResult(done, last_token_t)
