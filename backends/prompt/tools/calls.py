"""Tool calls read back from a reply, in each family's own format.

- ``hermes`` (Qwen2.5, Qwen3 and templates that write ``<tool_call>``): one
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` block per call.
- ``llama3`` (Llama 3.1+): the reply is one JSON object ``{"name": ...,
  "parameters": {...}}`` (or ``"arguments"``), optionally after ``<|python_tag|>``.
- ``chatglm3``: the reply's first line names the tool (the metadata after
  ``<|assistant|>``), then a ``python`` code block with ``tool_call(key=value, ...)``.
- ``glm4``: the first line names the tool, the rest is its arguments as JSON.
- ``react`` (Qwen v1's ReAct prompt): ``Action: NAME`` then ``Action Input: {...}``.
- ``openai``: the calls a server read from the reply itself (the chat API's
  ``tool_calls``, each with an ``id`` its result answers), through ``calls_from_api``.

Arguments are read as data only (JSON, or Python literals through ``ast``):
nothing in a reply is ever executed. A reply that looks like a call but does
not parse stays text, with ``problem`` saying in one line what is wrong.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

FORMATS = ("hermes", "llama3", "chatglm3", "glm4", "react")

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_REACT = re.compile(r"Action:\s*(?P<name>[^\n]+?)\s*\nAction Input:\s*(?P<args>.*?)\s*(?:\nObservation:|$)", re.S)
_FENCE = re.compile(r"```(?:python)?\s*\n?(.*?)\n?```", re.S)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict
    raw: str = ""  # the reply's text of the call, as the model wrote it
    id: str = ""  # the server's id of a call it read itself (its result names it)

    def to_json(self) -> dict:
        return {"name": self.name, "arguments": self.arguments, **({"id": self.id} if self.id else {})}


@dataclass(frozen=True)
class ParsedReply:
    """A reply split into its text and its calls; ``problem`` is one line when something that looks
    like a call did not parse (the reply then stays text)."""

    text: str
    calls: list[ToolCall] = field(default_factory=list)
    problem: str | None = None


def call_format(family) -> str | None:
    """The call format of a prompt family (None: it has none that llm-tui reads)."""
    own = getattr(family, "tool_call_format", None)
    if own:
        return own
    template = getattr(getattr(family, "tokenizer", None), "chat_template", None) or ""
    if not isinstance(template, str):
        template = " ".join(str(t) for t in (template.values() if isinstance(template, dict) else template))
    if "<tool_call>" in template:
        return "hermes"
    if "<|python_tag|>" in template or "ipython" in template:
        return "llama3"
    if "<|observation|>" in template:
        return "glm4"
    return None


def parse_reply(fmt: str | None, text: str, known: set[str] | None = None) -> ParsedReply:
    """``text`` (a finished reply) in format ``fmt``; ``known`` names the tools on offer (a call to
    another is a problem, not a call)."""
    if fmt is None:
        return ParsedReply(text)
    try:
        parsed = _PARSERS[fmt](text)
    except _NotACall as err:
        return ParsedReply(text, problem=str(err))
    if known is not None:
        unknown = [c.name for c in parsed.calls if c.name not in known]
        if unknown:
            return ParsedReply(text, problem=f"the reply calls {unknown[0]!r}, which is not one of the tools on offer")
    return parsed


class _NotACall(ValueError):
    pass


def calls_from_api(text: str, tool_calls: list[dict], known: set[str] | None = None) -> ParsedReply:
    """The calls a server read from the reply (``{"id", "name", "arguments"}``, the arguments a JSON
    string as the API sends them): a call whose arguments are not a JSON object is a problem."""
    calls = []
    try:
        for entry in tool_calls:
            name = str(entry.get("name") or "")
            if not name:
                raise _NotACall("the server sent a tool call without a name")
            calls.append(ToolCall(name, _arguments(entry.get("arguments") or "{}", name), str(entry.get("arguments")),
                                  str(entry.get("id") or "")))
    except _NotACall as err:
        return ParsedReply(text, problem=str(err))
    unknown = [c.name for c in calls if known is not None and c.name not in known]
    if unknown:
        return ParsedReply(text, problem=f"the reply calls {unknown[0]!r}, which is not one of the tools on offer")
    return ParsedReply(text, calls)


def _arguments(value, name: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, str):  # some models write the arguments as a JSON string
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _NotACall(f"the arguments of the call to {name!r} are not JSON") from None
    if not isinstance(value, dict):
        raise _NotACall(f"the arguments of the call to {name!r} are not an object")
    return value


def _json_call(body: str, keys: tuple[str, ...]) -> ToolCall:
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        raise _NotACall(f"a tool call that is not JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise _NotACall("a tool call without a \"name\"")
    args = next((data[k] for k in keys if k in data), None)
    return ToolCall(data["name"], _arguments(args, data["name"]), body)


def _hermes(text: str) -> ParsedReply:
    blocks = list(_HERMES.finditer(text))
    if not blocks:
        return ParsedReply(text)
    calls = [_json_call(m.group(1), ("arguments", "parameters")) for m in blocks]
    rest = (text[:blocks[0].start()] + "".join(text[a.end():b.start()] for a, b in zip(blocks, blocks[1:]))
            + text[blocks[-1].end():]).strip()
    return ParsedReply(rest, calls)


def _llama3(text: str) -> ParsedReply:
    body = text.strip()
    if body.startswith("<|python_tag|>"):
        body = body[len("<|python_tag|>"):].strip()
    if not body.startswith("{"):
        return ParsedReply(text)
    return ParsedReply("", [_json_call(body, ("parameters", "arguments"))])


def _first_line(text: str) -> tuple[str, str]:
    head, _, rest = text.lstrip("\n").partition("\n")
    return head.strip(), rest


def _chatglm3(text: str) -> ParsedReply:
    name, rest = _first_line(text)
    fence = _FENCE.search(rest)
    if not name or not re.fullmatch(r"[A-Za-z_][\w.-]*", name) or fence is None:
        return ParsedReply(text)
    source = fence.group(1).strip()
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise _NotACall(f"the call to {name!r} is not tool_call(...) Python") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "tool_call"
            and not call.args):
        raise _NotACall(f"the call to {name!r} is not tool_call(key=value, ...)")
    try:
        arguments = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}
    except ValueError:
        raise _NotACall(f"an argument of the call to {name!r} is not a plain value") from None
    return ParsedReply("", [ToolCall(name, arguments, text.strip())])


def _glm4(text: str) -> ParsedReply:
    name, rest = _first_line(text)
    body = rest.strip()
    if not name or not re.fullmatch(r"[A-Za-z_][\w.-]*", name) or not body.startswith("{"):
        return ParsedReply(text)
    try:
        arguments = json.loads(body)
    except json.JSONDecodeError as err:
        raise _NotACall(f"the arguments of the call to {name!r} are not JSON ({err.msg})") from None
    return ParsedReply("", [ToolCall(name, _arguments(arguments, name), text.strip())])


def _react(text: str) -> ParsedReply:
    found = _REACT.search(text)
    if found is None:
        return ParsedReply(text)
    name, args = found.group("name").strip(), found.group("args").strip()
    try:
        arguments = json.loads(args) if args else {}
    except json.JSONDecodeError:
        raise _NotACall(f"the Action Input of {name!r} is not JSON") from None
    return ParsedReply(text[:found.start()].strip(), [ToolCall(name, _arguments(arguments, name), found.group(0))])


_PARSERS = {"hermes": _hermes, "llama3": _llama3, "chatglm3": _chatglm3, "glm4": _glm4, "react": _react}
