"""Tool calls and results in the chat: a reply's calls as calls (name, arguments, what became of each),
and a tool's result as a message of its own.

Both are drawn from what is saved (a reply's ``stats["tool"]``, a result's text and
``tool`` stats), so a conversation reopened later looks as it did. Arguments and
results are the model's and the tool's words: they go through ``visible_text``
into ``Content``, never markup, and escape sequences show as ␛.
"""

from __future__ import annotations

import json

from textual.content import Content
from textual.widgets import Static

from backends.core.sanitize import visible_text

#: Result lines shown in the chat (the model reads all of them; the export keeps all of them).
SHOWN_LINES = 12
SHOWN_LINE_CHARS = 400

#: What became of a call, as its line says it.
OUTCOMES = {
    "waiting": "waiting for your answer: y runs it · a always · n does not",
    "running": "running… (Esc stops waiting)",
    "ran": "ran",
    "failed": "failed",
    "refused": "not run: you said no",
    "stopped": "not run: stopped",
    "no runner": "not run: no MCP server runs it",
    "step limit": "not run: the turn reached its tool step limit",
}


def arguments_text(arguments: dict) -> str:
    return json.dumps(arguments, ensure_ascii=False)


def call_lines(tool: dict) -> Content:
    """A reply's calls, one line each: ``⚙ NAME {arguments} · outcome``."""
    parts: list = []
    for n, call in enumerate(tool.get("calls") or []):
        if n:
            parts.append("\n")
        outcome = call.get("outcome") or ""
        seconds = call.get("seconds")
        said = OUTCOMES.get(outcome, outcome) + (f" in {seconds:.2f} s" if seconds is not None else "")
        style = {"failed": "$text-error", "waiting": "bold $text-warning", "running": "$text-accent"}.get(
            outcome, "$text-muted")
        parts += [("⚙ ", "bold"), (visible_text(str(call.get("name"))), "bold"), " ",
                  visible_text(arguments_text(call.get("arguments") or {})), (f" · {said}", style) if said else ""]
    return Content.assemble(*parts)


def shown_result(text: str) -> str:
    """A result as the chat shows it: its first ``SHOWN_LINES`` lines, each cut to a width, and how much more."""
    lines = visible_text(text).split("\n")
    shown = [line if len(line) <= SHOWN_LINE_CHARS else line[:SHOWN_LINE_CHARS] + "…" for line in lines[:SHOWN_LINES]]
    if len(lines) > SHOWN_LINES:
        shown.append(f"… {len(lines) - SHOWN_LINES:,} more lines (the model reads them all; /save keeps them)")
    return "\n".join(shown)


class ToolResult(Static):
    """A tool's result, as the model reads it (a failure says so)."""

    def __init__(self, name: str, text: str, *, error: bool = False, seconds: float | None = None) -> None:
        took = f" · {seconds:.2f} s" if seconds is not None else ""
        heading = Content.assemble(("↳ ", "bold"), (visible_text(name), "bold"),
                                   (" failed" if error else " result", "$text-error" if error else ""),
                                   (f"{took}\n", "$text-muted"))
        super().__init__(heading + Content(shown_result(text)), classes="message tool-result" + (" -error" if error
                                                                                              else ""))
        self.tool_name = name
        self.text = text
        self.error = error
