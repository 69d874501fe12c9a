"""Messages: validation, loading from JSON, and a growing conversation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from backends.core.errors import UsageError

ROLES = ("system", "user", "assistant", "tool")
#: What a message may carry beyond role and content: a tool result's tool ``name`` (and the
#: ``tool_call_id`` it answers), ChatGLM3's ``metadata`` (the tool name a call is written after);
#: an assistant message may carry the chat API's ``tool_calls``.
_EXTRA_KEYS = ("name", "metadata", "tool_call_id")


def validate_messages(messages: object, *, source: str = "messages") -> list[dict]:
    """Check a JSON-like list of {role, content} and return clean copies."""
    if not isinstance(messages, list):
        raise UsageError(f"{source} must be a JSON list of {{\"role\", \"content\"}} objects",
                         'for example: [{"role": "user", "content": "Hi"}]')
    if not messages:
        raise UsageError(f"{source} is empty", "give at least one user message")
    clean: list[dict] = []
    for pos, item in enumerate(messages):
        if not isinstance(item, dict) or "role" not in item or "content" not in item:
            raise UsageError(f"{source}[{pos}] is not an object with 'role' and 'content'",
                             'each item looks like {"role": "user", "content": "Hi"}')
        role, content = item["role"], item["content"]
        if role not in ROLES:
            raise UsageError(f"{source}[{pos}] has unknown role '{role}'", "use one of: " + ", ".join(ROLES))
        if not isinstance(content, str):
            raise UsageError(f"{source}[{pos}] content must be a string")
        if role == "system" and pos != 0:
            raise UsageError(f"{source}[{pos}] is a system message but not the first", "put the system message first")
        extra = {k: item[k] for k in _EXTRA_KEYS if isinstance(item.get(k), str) and item[k]}
        if role == "assistant" and isinstance(item.get("tool_calls"), list) and item["tool_calls"]:
            extra["tool_calls"] = item["tool_calls"]
        clean.append({"role": role, "content": content, **extra})
    return clean


def load_messages(path: str, stdin: IO[str] | None = None) -> list[dict]:
    """Read messages from a JSON file, or from standard input when path is '-'."""
    if path == "-":
        import sys

        raw, source = (stdin or sys.stdin).read(), "standard input"
    else:
        file = Path(path)
        if not file.is_file():
            raise UsageError(f"messages file '{path}' does not exist", "give the path of a JSON file or - for standard input")
        raw, source = file.read_text(encoding="utf-8"), f"'{path}'"
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise UsageError(f"{source} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})",
                         'expected a list like [{"role": "user", "content": "Hi"}]') from None
    return validate_messages(data, source=source)


@dataclass
class Conversation:
    """An ordered chat; the system prompt, when set, is always message 0."""

    messages: list[dict] = field(default_factory=list)

    @property
    def system(self) -> str | None:
        if self.messages and self.messages[0]["role"] == "system":
            return self.messages[0]["content"]
        return None

    def set_system(self, text: str | None) -> None:
        if self.system is not None:
            self.messages.pop(0)
        if text:
            self.messages.insert(0, {"role": "system", "content": text})

    def add_user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})

    def add_assistant(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})

    def add_tool_result(self, name: str, text: str) -> None:
        self.messages.append({"role": "tool", "name": name, "content": text})

    def since_last_user(self) -> list[dict]:
        """The turn being answered: what came after the last user message (replies, calls, results)."""
        for index in range(len(self.messages) - 1, -1, -1):
            if self.messages[index]["role"] == "user":
                return self.messages[index + 1:]
        return []

    def pop_last_reply(self) -> str | None:
        if self.messages and self.messages[-1]["role"] == "assistant":
            return self.messages.pop()["content"]
        return None

    def pop_last_user(self) -> str | None:
        """Remove the last user message (and its turn after it: replies, calls, results); return its text."""
        while self.messages and self.messages[-1]["role"] in ("assistant", "tool"):
            self.messages.pop()
        if self.messages and self.messages[-1]["role"] == "user":
            return self.messages.pop()["content"]
        return None

    def clear(self) -> None:
        system = self.system
        self.messages.clear()
        self.set_system(system)

    def copy_messages(self) -> list[dict]:
        return [dict(m) for m in self.messages]
