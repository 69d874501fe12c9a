"""Typed messages between the workers, the controllers, the screens and the app.

Workers run in threads and only ever ``post_message`` (it never waits for the
screen, so the model never runs slower because the screen is busy). Screens
ask the app for things with messages too, never by calling it by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from textual.message import Message

from backends.checkpoint.consent import CodeFile
from backends.core.errors import LlmTuiError
from backends.core.errors import is_warning
from backends.core.events import DoneEvent, TokenEvent
from backends.memory.fit import TurnFit
from backends.profile.measure import ProfileRow
from backends.prompt.view import PromptView
from backends.storage.records import StoredConversation
from backends.storage.store import StoreDamaged

# -- a turn ---------------------------------------------------------------------------------------


@dataclass
class TokensArrived(Message):
    """New reply text for turn ``turn``: ``n_tokens`` tokens since the last message (posted to the reply)."""

    bubble = False  # for the reply it was posted to, nobody else
    turn: int
    text: str
    n_tokens: int
    tokens: list[TokenEvent] = field(default_factory=list)  # the batch's tokens (IDs, probabilities)


@dataclass
class TurnDone(Message):
    """Turn ``turn`` ended; ``last_token_t`` is when its last token came (perf_counter)."""

    turn: int
    done: DoneEvent
    last_token_t: float | None
    view: PromptView  # the prompt that was sent


@dataclass
class TurnStarted(Message):
    """Turn ``turn``'s prompt is built and going to the model: ``view`` is exactly what it sends."""

    turn: int
    view: PromptView


@dataclass
class TurnWontFit(Message):
    """The fit check says turn ``turn`` would not fit; nothing was generated."""

    turn: int
    fit: TurnFit
    request: object  # the controller's TurnRequest: asked again as it was (a branch keeps its prefix)


# -- a compared turn (Comparing) -------------------------------------------------------------------


@dataclass
class ComparedReplyDone(Message):
    """One model's reply in compared turn ``turn`` ended (pane ``pane``)."""

    turn: int
    pane: int
    done: DoneEvent


@dataclass
class ComparedPrompt(Message):
    """Pane ``pane`` of compared turn ``turn`` is being answered from ``view``."""

    turn: int
    pane: int
    view: PromptView


@dataclass
class CompareProgress(Message):
    """What compared turn ``turn`` is doing now ("2 answering", "reading the replies")."""

    turn: int
    text: str


@dataclass
class CompareEnded(Message):
    """Compared turn ``turn`` is over: every reply (``ReplyRun``s), the pairs against the reference
    (``PairOutcome``s), each pane's divergence at its own tokens, or the one line why not (``error``)."""

    turn: int
    runs: list = field(default_factory=list)
    pairs: list = field(default_factory=list)
    divergence: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class PreviewReady(Message):
    """The prompt the next turn would send (or why it cannot be built)."""

    serial: int
    view: PromptView | None
    error: str | None
    #: Compare mode: (labels, views), every compared model's prompt (``view`` is the first's).
    compared: tuple | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PreviewReady)


# -- models ---------------------------------------------------------------------------------------


@dataclass
class LoadProgress(Message):
    """A model is loading: what is happening and how far (None when unknown)."""

    slot: int
    text: str
    fraction: float | None

    def can_replace(self, message: Message) -> bool:
        # Only the newest progress matters; a queue of stale ones is dropped (a warning is never).
        return isinstance(message, LoadProgress) and message.slot == self.slot and not is_warning(message.text)


@dataclass
class ModelReady(Message):
    slot: int
    handle: object  # a backends ModelHandle


@dataclass
class NeedsConsent(Message):
    """The model in ``slot`` ships Python files that would run when it loads."""

    slot: int
    folder: str
    files: list[CodeFile] = field(default_factory=list)


# -- tools --------------------------------------------------------------------------------------


@dataclass
class ToolsStarted(Message):
    """MCP server ``server`` is up with ``tools`` (``Tool``s), or could not start (``error``)."""

    server: object
    tools: list = field(default_factory=list)
    error: LlmTuiError | None = None


@dataclass
class ToolCallFinished(Message):
    """Call number ``serial`` came back (``outcome``: a ``ToolOutcome``) after ``seconds``."""

    serial: int
    outcome: object
    seconds: float


# -- memory profiles ------------------------------------------------------------------------------


@dataclass
class ProfileProgress(Message):
    """A profile moved on: what it measures now, how far (0-1), and every row measured so far."""

    run: object  # the controller's ProfileRun
    text: str
    fraction: float | None
    rows: list[ProfileRow]

    def can_replace(self, message: Message) -> bool:
        # Each message carries all the rows so far: only the newest matters.
        return isinstance(message, ProfileProgress) and message.run is self.run


@dataclass
class ProfileDone(Message):
    """A profile ended: its rows (partial when stopped or out of memory) and the error that ended it."""

    run: object
    rows: list[ProfileRow]
    error: str | None


@dataclass
class ProfileRequested(Message):
    """A screen asks for a memory profile of the active model (``lengths`` as typed; empty: defaults)."""

    lengths: str = ""


@dataclass
class ProfileStopRequested(Message):
    """A screen asks the running profile to stop (the rows measured so far stay)."""

# -- the conversation -----------------------------------------------------------------------------


@dataclass
class ConversationChanged(Message):
    """The conversation, the system prompt or the prompt budget changed: the preview is stale."""

    now: bool = True


@dataclass
class DatabaseDamaged(Message):
    """The conversation database failed while in use: nothing more is written to it."""

    error: StoreDamaged


# -- the database, opened and read off the UI thread ------------------------------------------------


@dataclass
class StoreOpened(Message):
    """A worker opened the conversation database (``PRAGMA quick_check``, migrations) — or could
    not: ``error`` says why (a ``StoreDamaged``, or a folder that cannot be made)."""

    path: Path
    error: LlmTuiError | None
    seconds: float  # the worker's wall time


@dataclass
class ConversationLoaded(Message):
    """A worker read a stored conversation (``--resume``, F3): ``stored`` to put on screen, or
    ``notice`` to say instead (``error``: as an error). ``forked_from``: (the id asked for, the
    process that holds it) when another llm-tui records it and this one goes on in a copy."""

    stored: StoredConversation | None
    notice: str | None = None
    error: bool = False
    forked_from: tuple[int, int | None] | None = None
    seconds: float = 0.0  # the worker's wall time
