"""Tool definitions: OpenAI function schemas, from a file (``--tools FILE.json``) or an MCP server.

A file holds a JSON list; each entry is ``{"type": "function", "function": {...}}`` (the
OpenAI ``tools`` form, as chat templates take it) or the inner ``{"name", "description",
"parameters"}`` alone. Everything a template or a family renders comes from ``Tool.schema()``,
so one definition reads the same to every family.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from backends.core.errors import UsageError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}})
    source: str = ""  # where it came from: "FILE" or "mcp NAME"

    def schema(self) -> dict:
        """The OpenAI ``tools`` entry: what chat templates (``tools=``) and servers take."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def tool_from_json(entry: object, where: str = "") -> Tool:
    """One definition, in either form; one line saying what is wrong otherwise."""
    at = f" in {where}" if where else ""
    if not isinstance(entry, dict):
        raise UsageError(f"a tool definition{at} is not a JSON object", 'write {"type": "function", "function": '
                         '{"name": ..., "description": ..., "parameters": {...}}}')
    inner = entry.get("function") if entry.get("type") == "function" or "function" in entry else entry
    if not isinstance(inner, dict):
        raise UsageError(f"a tool definition{at} has no function object", 'write {"type": "function", '
                         '"function": {"name": ...}}')
    name = inner.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(f"a tool{at} has no usable name ({name!r})",
                         "a name is letters, digits, _ . or -, starting with a letter or _")
    parameters = inner.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise UsageError(f"tool {name!r}{at}: parameters must be a JSON schema object",
                         'for example {"type": "object", "properties": {"city": {"type": "string"}}}')
    description = inner.get("description") or ""
    if not isinstance(description, str):
        raise UsageError(f"tool {name!r}{at}: the description must be text")
    return Tool(name, description, parameters, where)


def load_tools(path: str | Path) -> list[Tool]:
    """The tools of a JSON file (a list, or one definition); names must be unique."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"there is no tools file {path}", "pass a JSON file of OpenAI function schemas") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read the tools file {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"the tools file {path} is not JSON: {err.msg} at line {err.lineno}",
                         "it holds a list of OpenAI function schemas") from None
    entries = data if isinstance(data, list) else [data]
    tools = [tool_from_json(entry, path.name) for entry in entries]
    check_unique(tools)
    return tools


def check_unique(tools: list[Tool]) -> None:
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise UsageError(f"two tools are named {tool.name!r}", "a model calls tools by name: rename one")
        seen.add(tool.name)
