"""``llm-tui run --tools FILE | --mcp NAME [--allow-tool NAME] [--json]``: a turn that may call tools.

A call runs only when ``--allow-tool`` names its tool and an MCP server offers
it; otherwise the run stops at the call (exit 0) with the call printed. With
``--json`` each reply's tokens are token events as in a plain run, each call a
``tool_call`` event (``allowed``: whether it ran), each result a
``tool_result`` event (``error``: the tool failed, hung or its server went
away), and the last reply's ``done`` event ends the output with ``steps``.
"""

from __future__ import annotations

import json
import sys

from backends.core.errors import UsageError
from backends.core.events import DoneEvent, TokenEvent
from backends.core.sanitize import visible_text
from backends.generation.open import open_model
from backends.generation.tool_loop import ToolOutcome, tool_turn
from backends.mcp.client import McpServer
from backends.prompt.tools.calls import ToolCall
from backends.prompt.tools.definitions import check_unique, load_tools

from .settings import load_config
from .turn_check import check_turn_fits


def run_with_tools(args, spec, messages: list[dict], params) -> int:
    tools = load_tools(args.tools) if args.tools else []
    servers: dict[str, McpServer] = {}  # tool name -> the server that runs it
    started: list[McpServer] = []
    try:
        configured = load_config().mcp_servers
        for name in args.mcp:
            if name not in configured:
                known = ", ".join(configured) or "none"
                raise UsageError(f"there is no MCP server '{name}' in the config (known: {known})",
                                 f"add [mcp.servers.{name}] with command = ... or url = ...")
            server = McpServer(configured[name])
            started.append(server)
            for tool in server.start():
                tools.append(tool)
                servers[tool.name] = server
        check_unique(tools)
        handle = open_model(spec)
        check_turn_fits(handle, messages, params)
        return _run(args, handle, messages, params, tools, servers)
    finally:
        for server in started:
            server.close()


def _run(args, handle, messages, params, tools, servers) -> int:
    out = sys.stdout
    safe = visible_text if out.isatty() else (lambda s: s)
    allowed = set(args.allow_tool)
    last: list[DoneEvent] = []

    def decide(call: ToolCall) -> bool:
        return call.name in allowed and call.name in servers

    def run(call: ToolCall) -> tuple[str, bool]:
        result = servers[call.name].call(call.name, call.arguments)
        return result.text, result.is_error

    def heard(event) -> None:
        if isinstance(event, TokenEvent):
            out.write(json.dumps({"type": "token", "id": event.id, "text": event.text}, ensure_ascii=False) + "\n"
                      if args.json else safe(event.text))
        elif isinstance(event, DoneEvent):
            last.append(event)
            if not args.json:
                out.write("\n")
        elif isinstance(event, ToolCall):
            ok = decide(event)
            if args.json:
                out.write(json.dumps({"type": "tool_call", **event.to_json(), "allowed": ok}, ensure_ascii=False)
                          + "\n")
            else:
                out.write(f"[tool call] {event.name} {json.dumps(event.arguments, ensure_ascii=False)}\n")
            if not ok:
                why = ("no MCP server offers it" if event.name not in servers
                       else f"--allow-tool {event.name} lets it run")
                print(f"llm-tui: stopped at the call to {event.name}: {why}", file=sys.stderr)
        elif isinstance(event, ToolOutcome) and not event.refused:
            if args.json:
                out.write(json.dumps({"type": "tool_result", "name": event.call.name, "text": event.text,
                                      "error": event.error}, ensure_ascii=False) + "\n")
            else:
                out.write(f"[tool result{' (error)' if event.error else ''}] {safe(event.text)}\n")
        out.flush()

    prefix = handle.prefill_tokens(args.prefill) if args.prefill else None
    steps, _ = tool_turn(handle, messages, params, tools, decide=decide, run=run, on_event=heard,
                         max_steps=max(1, args.max_tool_steps), prefix=prefix)
    for step in steps:
        if step.parsed.problem:
            print(f"llm-tui: warning: {step.parsed.problem}", file=sys.stderr)
    done = last[-1]
    if args.json:
        out.write(json.dumps({"type": "done", "stop_reason": done.stop_reason, "stats": done.stats.to_json(),
                              "prompt_ids": done.prompt_ids, "captured_ids": done.captured_ids,
                              "prompt_check": done.prompt_check, "steps": len(steps),
                              "family": handle.info.family, "model": handle.info.label}) + "\n")
    out.flush()
    if done.stop_reason == "error":
        print(f"llm-tui: error: {done.error}", file=sys.stderr)
        return 1
    return 0
