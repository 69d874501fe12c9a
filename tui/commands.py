"""Slash commands typed in the input: the list, parsing, and Tab completion."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from backends.checkpoint.quantized import CHECKPOINT_METHODS
from backends.core.errors import UsageError
from backends.core.params import PARAM_NAMES
from backends.core.spec import QUANT_CHOICES


@dataclass(frozen=True)
class SlashCommand:
    name: str
    usage: str  # what follows the name
    help: str


COMMANDS: tuple[SlashCommand, ...] = (
    SlashCommand("clear", "", "clear the conversation (the system prompt stays)"),
    SlashCommand("new", "", "start a new conversation (the current one stays in the history)"),
    SlashCommand("system", "[TEXT]", "set the system prompt; alone, put the current one in the input to edit; 'none' removes it"),
    SlashCommand("set", "NAME VALUE", "set a sampling parameter: " + ", ".join(PARAM_NAMES)),
    SlashCommand("seed", "N|none", "set the sampling seed (none: random)"),
    SlashCommand("params", "", "show the sampling parameters"),
    SlashCommand("model", "NAME|N [QUANT]", "switch model: a number from the picker, an alias, a path or an HF id; "
                 "QUANT (nf4, fp4, int8, none) loads it quantized that way"),
    SlashCommand("models", "", "open the model picker"),
    SlashCommand("compare", "N M [..]|off", "send each message to 2-4 models at once (the first is the reference) "
                 "and measure where they disagree; off ends it"),
    SlashCommand("keep", "N", "go on from reply N of the last compared turn"),
    SlashCommand("tools", "[on|off NAME..|all] [mcp NAME] [steps N] [timeout S]",
                 "list the tools on offer, turn them on or off for this conversation, start a configured MCP server"),
    SlashCommand("regen", "", "regenerate the last reply"),
    SlashCommand("edit", "", "put the last message back in the input to edit and resend"),
    SlashCommand("stop", "", "stop the reply being generated"),
    SlashCommand("copy", "[code]", "copy the last reply (or its last code block) to the clipboard"),
    SlashCommand("save", "[md|json] [PATH]", "export the conversation as Markdown and JSON"),
    SlashCommand("sessions", "", "list saved conversations"),
    SlashCommand("budget", "N|off", "keep each prompt within N tokens by the model family's truncation (off: no limit)"),
    SlashCommand("profile", "[LENGTHS]", "measure memory and speed at context lengths (e.g. 256,512,1k) and plot them (F9)"),
    SlashCommand("theme", "NAME", "change the colour theme"),
    SlashCommand("help", "", "show keys and commands"),
    SlashCommand("quit", "", "leave llm-tui"),
)

BY_NAME = {c.name: c for c in COMMANDS}


@dataclass(frozen=True)
class Parsed:
    name: str
    arg: str  # the rest of the line, stripped of the separating space


def parse(text: str) -> Parsed | None:
    """The slash command in ``text``, None for a chat message; unknown names raise UsageError.

    A message that should start with a slash is written with two (``//etc``).
    """
    stripped = text.strip()
    if not stripped.startswith("/") or stripped.startswith("//"):
        return None
    head, _, rest = stripped[1:].partition(" ")
    if "\n" in head:
        head, _, more = head.partition("\n")
        rest = more + (" " + rest if rest else "")
    name = head.lower()
    if name not in BY_NAME:
        close = [c.name for c in COMMANDS if c.name.startswith(name[:2])] if name else []
        hint = "did you mean " + " or ".join("/" + n for n in close) + "?" if close else "type /help for the list"
        raise UsageError(f"unknown command '/{head}'", hint)
    return Parsed(name, rest.strip())


def literal(text: str) -> str:
    """The message text for input that is not a command (``//x`` sends ``/x``)."""
    stripped = text.lstrip()
    return stripped[1:] if stripped.startswith("//") else text


def parse_model(arg: str) -> tuple[str, str | None]:
    """``/model NAME [QUANT]`` -> (NAME, QUANT or None); a path with spaces stays whole."""

    name, _, last = arg.strip().rpartition(" ")
    if name.strip() and last.lower() in QUANT_CHOICES and last.lower() not in CHECKPOINT_METHODS:
        return name.strip(), last.lower()
    return arg.strip(), None


def parse_set(arg: str) -> tuple[str, str]:
    name, _, value = arg.partition(" ")
    if not name or not value.strip():
        raise UsageError("/set needs a name and a value", "for example: /set temperature 0.2 (names: "
                         + ", ".join(PARAM_NAMES) + ")")
    return name.strip().replace("-", "_"), value.strip()


def parse_save(arg: str) -> tuple[tuple[str, ...], str | None]:
    """Formats to write and an optional path: ``/save``, ``/save md``, ``/save json out.json``."""
    parts = arg.split(maxsplit=1)
    formats: tuple[str, ...] = ("md", "json")
    path = None
    if parts and parts[0].lower() in ("md", "markdown", "json"):
        formats = ("json",) if parts[0].lower() == "json" else ("md",)
        path = parts[1] if len(parts) > 1 else None
    elif parts:
        path = arg.strip()
        ext = os.path.splitext(path)[1].lower()
        if ext in (".md", ".json"):
            formats = (ext[1:],)
        else:
            raise UsageError(f"/save does not know where to write '{path}'",
                             "give md or json first, or a path ending in .md or .json")
    return formats, path


def complete(text: str, *, models: Iterable[str] = (), themes: Iterable[str] = ()) -> list[str]:
    """Whole-input completions for ``text`` (a slash command being typed)."""
    if not text.startswith("/") or "\n" in text:
        return []
    head, space, rest = text[1:].partition(" ")
    if not space:
        return [f"/{c.name}" + (" " if c.usage else "") for c in COMMANDS if c.name.startswith(head.lower())]
    name = head.lower()
    if name == "set":
        param, space2, _ = rest.partition(" ")
        if space2:
            return []
        choices = PARAM_NAMES
    elif name == "model":
        choices = tuple(models)
    elif name == "theme":
        choices = tuple(themes)
    elif name == "save":
        choices = ("md", "json")
    elif name == "copy":
        choices = ("code",)
    elif name == "seed":
        choices = ("none",)
    else:
        return []
    word = rest if name != "set" else rest.partition(" ")[0]
    suffix = " " if name == "set" else ""
    return [f"/{name} {c}{suffix}" for c in choices if c.startswith(word)]


def common_prefix(options: list[str]) -> str:
    return os.path.commonprefix(options) if options else ""
