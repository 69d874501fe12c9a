"""Stopping a prompt render nobody wants any more (a preview superseded by more typing).

A thread cannot be stopped from outside, so a render checks, between its expensive
steps, whether the event it was handed is set, and raises ``RenderCancelled``. The event
reaches the families through a context variable that ``render_within`` sets, so the
``PromptFamily`` protocol — which servers and the native engine implement too — keeps its
signature: a family that never checks simply runs to the end. A thread has a context of its
own, so a preview's event never stops the render of a turn in another thread.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator


class RenderCancelled(Exception):
    """The render was cancelled: its result is not wanted."""


_cancel: ContextVar[threading.Event | None] = ContextVar("llm_tui_render_cancel", default=None)


@contextmanager
def cancellable(event: threading.Event | None) -> Iterator[None]:
    """Renders inside stop at their next check once ``event`` is set (None: an outer event, if any)."""
    if event is None:
        yield
        return
    token = _cancel.set(event)
    try:
        yield
    finally:
        _cancel.reset(token)


def check_cancelled() -> None:
    """Raise ``RenderCancelled`` if the render under way was cancelled; cheap enough for any loop."""
    event = _cancel.get()
    if event is not None and event.is_set():
        raise RenderCancelled()
