"""Which streaming method a checkpoint has, and what it needs that the installed packages lack."""

from __future__ import annotations

import importlib
import inspect
import re
import textwrap
from dataclasses import dataclass

from backends.loading.remote.fixes import standin_reason

QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class Method:
    """One known streaming method: its name and what it is called in messages."""

    kind: str  # "chat_stream" | "stream_chat" | "chat"
    title: str


CHAT_STREAM = Method("chat_stream", "chat_stream(tokenizer, query, history, system)")
STREAM_CHAT = Method("stream_chat", "stream_chat(tokenizer, query, history, role, past_key_values)")
CHAT_MESSAGES = Method("chat", "chat(tokenizer, messages, stream=True)")


def find_method(model) -> Method | None:
    """The streaming method ``model`` offers, recognised by name and parameters."""
    for method, needed in ((CHAT_STREAM, ("tokenizer", "query", "history")),
                           (STREAM_CHAT, ("tokenizer", "query", "history")),
                           (CHAT_MESSAGES, ("tokenizer", "messages", "stream"))):
        func = getattr(model, method.kind, None)
        if func is None or not callable(func):
            continue
        try:
            params = inspect.signature(func).parameters
        except (TypeError, ValueError):
            continue
        if all(name in params for name in needed):
            return method
    return None


# -- what a method needs ------------------------------------------------------------
_SELF_ATTR = re.compile(r"\bself\.(\w+)")
_SELF_ASSIGN = re.compile(r"\bself(?:\.__class__)?\.(\w+)\s*=(?!=)")
_IMPORT = re.compile(r"^\s*(?:from\s+([A-Za-z_][\w.]*)\s+import\b|import\s+([A-Za-z_][\w.]*))", re.MULTILINE)


def missing_requirements(model, method_name: str) -> list[str]:
    """What ``method_name`` (and the checkpoint's own methods it calls) uses that is not here.

    Read from the source: attributes used on ``self`` that the model lacks, and
    packages imported inside the methods that do not import (or are llm-tui's
    stand-ins). An empty list means nothing is known to be missing.
    """

    cls = type(model)
    home = _home_module(cls, method_name)
    missing: list[str] = []
    seen: set[str] = set()
    queue = [method_name]
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        func = getattr(cls, name, None)
        if func is None or getattr(func, "__module__", None) != home:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(func))
        except (OSError, TypeError):
            continue
        assigned = set(_SELF_ASSIGN.findall(source))
        for attr in dict.fromkeys(_SELF_ATTR.findall(source)):
            if attr in assigned or attr.startswith("__"):
                continue
            if not hasattr(model, attr):
                _add(missing, f"{attr}()" if f"self.{attr}(" in source else attr)
            elif callable(getattr(cls, attr, None)):
                queue.append(attr)
        for found in _IMPORT.findall(source):
            module = found[0] or found[1]
            reason = standin_reason(module) or _import_problem(module)
            if reason:
                _add(missing, f"the '{module.split('.')[0]}' package ({reason})")
    return missing


def _home_module(cls, method_name: str) -> str | None:
    func = getattr(cls, method_name, None)
    return getattr(func, "__module__", None)


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)


def _import_problem(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        return "not installed"
    except Exception as err:
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"does not import: {text[:120]}"
    return None


def _transformers_version() -> str:
    try:
        import transformers

        return transformers.__version__
    except Exception:
        return "?"
