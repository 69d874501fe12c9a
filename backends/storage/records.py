"""What the store gives back: conversations, their messages, and the other replies of a turn."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone

from backends.core.conversation import Conversation
from backends.core.params import PARAM_NAMES, SamplingParams
from backends.storage.tokens import StoredToken, decode_tokens


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: int
    position: int  # 0-based order within the conversation
    role: str
    content: str
    status: str
    model: str | None
    stats: dict | None
    prompt_ids: list[int] | None
    captured_ids: list[int] | None
    created: float  # seconds since the epoch
    #: A reply's tokens with their probabilities, when they were recorded.
    tokens: list[StoredToken] | None = None
    #: The turn's other replies (branches), oldest first; the conversation goes on from this one.
    branches: tuple["StoredBranch", ...] = ()

    @property
    def said(self) -> bool:
        """The message has words, or is a call a server read (its words may be none)."""
        return bool(self.content or ((self.stats or {}).get("tool") or {}).get("calls"))

    def as_message(self) -> dict:
        """The message as a conversation holds it: a tool result names its tool (and the call it answers),
        a ChatGLM3 call its metadata, a server-read call its ``tool_calls`` (all kept in ``stats["tool"]``)."""
        message = {"role": self.role, "content": self.content}
        tool = (self.stats or {}).get("tool") or {}
        if self.role == "tool" and tool.get("name"):
            message["name"] = tool["name"]
        if self.role == "tool" and tool.get("call_id"):
            message["tool_call_id"] = tool["call_id"]
        if self.role == "assistant" and tool.get("metadata"):
            message["metadata"] = tool["metadata"]
        calls = [c for c in tool.get("calls") or [] if c.get("id")] if self.role == "assistant" else []
        if calls:  # calls the server read itself: the chat API's form
            message["tool_calls"] = [{"id": c["id"], "type": "function", "function": {
                "name": c["name"], "arguments": c.get("arguments") or {}}} for c in calls]
        return message

    def to_json(self) -> dict:
        data = reply_json(self, leave_out=("conversation_id", "branches"))
        if self.branches:
            data["branches"] = [b.to_json() for b in self.branches]
        return data


@dataclass(frozen=True)
class StoredBranch:
    """Another reply of the same turn (an earlier one, or one taken from an alternative token)."""

    id: int
    content: str
    status: str
    model: str | None
    stats: dict | None
    prompt_ids: list[int] | None
    captured_ids: list[int] | None
    tokens: list[StoredToken] | None
    created: float

    def to_json(self) -> dict:
        return reply_json(self)


def reply_json(record, leave_out: tuple[str, ...] = ()) -> dict:
    """A stored message or branch as JSON: its fields, the time in ISO 8601, its tokens if any."""
    data = {f.name: getattr(record, f.name) for f in fields(record) if f.name not in (*leave_out, "tokens")}
    data["created"] = iso_time(record.created)
    if record.tokens is not None:
        data["tokens"] = [t.to_json() for t in record.tokens]
    return data


@dataclass(frozen=True)
class ConversationSummary:
    id: int
    title: str
    created: float
    updated: float
    model: str | None
    message_count: int
    preview: str  # the start of the first user message

    @property
    def label(self) -> str:
        return self.title or self.preview or "New conversation"


@dataclass(frozen=True)
class StoredConversation:
    id: int
    title: str
    created: float
    updated: float
    model: str | None
    system: str | None
    params: dict
    #: Model details for reproducing the chat: spec dict, family name, and so on.
    meta: dict
    messages: tuple[StoredMessage, ...] = field(default_factory=tuple)

    def sampling_params(self) -> SamplingParams:
        """The stored parameters as SamplingParams (unknown keys ignored)."""
        return SamplingParams(**{k: v for k, v in self.params.items() if k in PARAM_NAMES})

    def to_conversation(self) -> Conversation:
        """The chat to continue from: the system prompt, then every message with text."""
        chat = Conversation()
        chat.set_system(self.system)
        chat.messages.extend(m.as_message() for m in self.messages if m.said and m.role != "system")
        return chat


def load_json(text: str | None):
    return None if text is None else json.loads(text)


#: A reply's prompt IDs and captured IDs, rebuilt whole (``storage.prompts``); the rows hold them as changes.
Ids = tuple["list[int] | None", "list[int] | None"]


def message_of(row: sqlite3.Row, branches: tuple[StoredBranch, ...] = (), ids: Ids = (None, None)) -> StoredMessage:
    return StoredMessage(
        id=row["id"], conversation_id=row["conversation_id"], position=row["position"],
        role=row["role"], content=row["content"], status=row["status"], model=row["model"],
        stats=load_json(row["stats"]), prompt_ids=ids[0], captured_ids=ids[1], created=row["created"],
        tokens=decode_tokens(row["tokens"]), branches=branches,
    )


def branch_of(row: sqlite3.Row, ids: Ids = (None, None)) -> StoredBranch:
    return StoredBranch(
        id=row["id"], content=row["content"], status=row["status"], model=row["model"],
        stats=load_json(row["stats"]), prompt_ids=ids[0], captured_ids=ids[1],
        tokens=decode_tokens(row["tokens"]), created=row["created"],
    )


def one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")
