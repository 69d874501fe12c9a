"""Bridge from backend threads to the UI: typed messages, batched by time.

Generation, loading and prompt previews run in Textual thread workers. From a
thread only ``post_message`` is safe and it never waits for the screen, so the
model never runs slower because the screen is busy. Tokens are gathered for
about 50 ms and sent as one ``TokensArrived``; ``App.call_from_thread`` is
never used per token (it blocks the caller until the UI has run).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

from textual.message import Message

from backends.core.errors import LlmTuiError
from backends.core.events import DoneEvent, TokenEvent
from backends.prompt.view import PromptView

#: How often streamed text is handed to the screen (20 Hz).
BATCH_INTERVAL = 0.05
#: How often a streaming reply is written to the database.
CHECKPOINT_INTERVAL = 1.0


def error_line(err: BaseException | None) -> str:
    """One line for the user: the error's own line for ours, else its type and first line."""
    if isinstance(err, LlmTuiError):
        return str(err)
    text = str(err).strip().splitlines() if err is not None else []
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


class TokensArrived(Message):
    """New reply text for turn ``turn``: ``n_tokens`` tokens since the last message."""

    def __init__(self, turn: int, text: str, n_tokens: int) -> None:
        super().__init__()
        self.turn = turn
        self.text = text
        self.n_tokens = n_tokens


class TurnDone(Message):
    """Turn ``turn`` ended; ``last_token_t`` is when its last token came (perf_counter)."""

    def __init__(self, turn: int, done: DoneEvent, last_token_t: float | None,
                 view: PromptView | None = None) -> None:
        super().__init__()
        self.turn = turn
        self.done = done
        self.last_token_t = last_token_t
        self.view = view  # the prompt sent, with the captured IDs set


class LoadProgress(Message):
    """A model is loading: what is happening and how far (None when unknown)."""

    def __init__(self, slot: int, text: str, fraction: float | None) -> None:
        super().__init__()
        self.slot = slot
        self.text = text
        self.fraction = fraction

    def can_replace(self, message: Message) -> bool:
        # Only the newest progress matters; a queue of stale ones is dropped.
        return isinstance(message, LoadProgress) and message.slot == self.slot


class ModelReady(Message):
    def __init__(self, slot: int, handle) -> None:
        super().__init__()
        self.slot = slot
        self.handle = handle


class ModelFailed(Message):
    def __init__(self, slot: int, error: str) -> None:
        super().__init__()
        self.slot = slot
        self.error = error


@dataclass(frozen=True)
class CodeFile:
    name: str
    size: int
    sha256: str


class NeedsConsent(Message):
    """The model in ``slot`` ships Python files that would run when it loads."""

    def __init__(self, slot: int, folder: str, files: list[CodeFile]) -> None:
        super().__init__()
        self.slot = slot
        self.folder = folder
        self.files = files


class TurnWontFit(Message):
    """The memory check says turn ``turn`` would not fit; nothing was generated."""

    def __init__(self, turn: int, fit) -> None:
        super().__init__()
        self.turn = turn
        self.fit = fit  # backends.truncation.TurnFit


class PreviewReady(Message):
    """The prompt the next turn would send (or why it cannot be built)."""

    def __init__(self, serial: int, view: PromptView | None, error: str | None) -> None:
        super().__init__()
        self.serial = serial
        self.view = view
        self.error = error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PreviewReady)


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
    text: str
    last_token_t: float | None


def pump_generation(generation, post: Callable[[Message], object], turn: int, *,
                    cancelled: threading.Event | None = None,
                    checkpoint: Callable[[str], None] | None = None,
                    view: PromptView | None = None,
                    pace: Pace | None = None,
                    checkpoint_interval: float = CHECKPOINT_INTERVAL) -> PumpResult:
    """Read ``generation`` until it ends, posting batched messages; runs in a thread.

    ``cancelled`` (the worker's cancelled_event) stops the generation between
    two tokens. ``checkpoint(text)`` receives the reply so far about once a
    second, so a killed process loses at most a second of text. ``pace`` sets
    the time between batches (at least ``BATCH_INTERVAL``).
    """
    pace = pace or Pace()
    pending: list[str] = []
    pending_tokens = 0
    reply: list[str] = []
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
                    reply.append(event.text)
                if event.id >= 0:  # id -1 is the decoder's final flush, not a token
                    pending_tokens += 1
                last_token_t = event.t
            elif isinstance(event, DoneEvent):
                done = event
        now = time.monotonic()
        if (pending_tokens or pending) and (done is not None or now - last_post >= interval):
            post(TokensArrived(turn, "".join(pending), pending_tokens))
            pending.clear()
            pending_tokens = 0
            last_post = now
        if checkpoint is not None and done is None and now - last_save >= checkpoint_interval:
            last_save = now
            checkpoint("".join(reply))
    post(TurnDone(turn, done, last_token_t, view))
    return PumpResult(done, "".join(reply), last_token_t)


def code_files(folder, files) -> list[CodeFile]:
    """Name, size and SHA-256 of each file, for the consent screen."""
    import hashlib
    from pathlib import Path

    out = []
    for path in files:
        path = Path(path)
        data = path.read_bytes()
        out.append(CodeFile(str(path.relative_to(folder)) if path.is_relative_to(folder) else path.name,
                            len(data), hashlib.sha256(data).hexdigest()))
    return out
