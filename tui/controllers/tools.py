"""Tools in the app: what is on offer, the consent asked before each call, the call run, the model going on.

Definitions come from ``--tools FILE`` (shown to the model; nothing runs them) and
from MCP servers (``--mcp NAME`` or ``/tools mcp NAME``, each started in a worker).
``/tools`` lists them and turns each on or off for the conversation.

A tool round is a sequence of ordinary turns: when a finished reply holds calls
in the model's own format (``parse_reply``), each call waits for the user's
answer (``ToolConsentScreen``: y, a for always in this conversation, n), runs in
a thread worker with a timeout, and its result becomes a ``tool`` message of the
conversation (saved, shown, in the next prompt); once every call is answered,
``Turns.generate`` lets the model go on. Esc stops at any step: the reply being
generated, the dialog (no), or the wait for a tool (its result is dropped). A
turn takes at most ``max_steps`` replies; a call past that is not run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

from backends.core.errors import LlmTuiError, UsageError
from backends.generation.tool_loop import (
    MAX_TOOL_STEPS,
    call_message,
    read_calls,
    result_message,
    result_text,
    run_call,
)
from backends.generation.tool_support import tool_support
from backends.mcp.client import CALL_TIMEOUT, McpServer
from backends.prompt.tools.calls import ToolCall
from backends.prompt.tools.definitions import Tool, load_tools

from ..messages import ToolCallFinished, ToolsStarted
from ..screens.tool_consent import ToolConsentScreen
from ..widgets.reply import Reply


@dataclass
class Offered:
    """A tool the model may be offered: where it runs (None: a file's definition, nothing runs it), and
    whether it is on in this conversation."""

    tool: Tool
    server: McpServer | None = None
    on: bool = True

    @property
    def where(self) -> str:
        return f"MCP server {self.server.name}" if self.server is not None else (self.tool.source or "a file")


@dataclass
class Round:
    """The calls of one finished reply, answered one after another; ``tool`` is what is saved of them."""

    reply: Reply
    calls: list[ToolCall]
    tool: dict
    step: int  # this reply's number in the turn
    next: int = 0  # the call being answered
    running: int | None = None  # the serial of the call running, while one runs


def engine_refusal(handle) -> str | None:
    """Why ``handle`` cannot be offered tools (one line), or None when it can."""
    return tool_support(handle)[1]


class ToolBox:
    def __init__(self, app, models, turns, recorder, *, chat, status, config=None) -> None:
        self.app = app
        self.models = models
        self.turns = turns
        self.recorder = recorder
        self.chat = chat
        self.status = status
        self.config = config
        self.offered: dict[str, Offered] = {}
        self.always: set[str] = set()  # tools that run without asking, in this conversation
        self.servers: list[McpServer] = []
        self.round: Round | None = None
        self.max_steps = MAX_TOOL_STEPS
        self.timeout = CALL_TIMEOUT
        self._serial = 0
        self._said: set[tuple[str, str]] = set()  # (model, why) said once: a model that is offered no tools

    # -- what is on offer ----------------------------------------------------------------------

    def start(self, tools_file: str | None, servers: list[str]) -> None:
        """The command line's ``--tools FILE`` and ``--mcp NAME``s (a mistake is one line; the app goes on)."""
        try:
            if tools_file:
                tools = load_tools(tools_file)
                self._add(tools, None)
                self.chat.add_notice(f"{len(tools)} tool{'s' if len(tools) != 1 else ''} from {tools_file}, on: "
                                     f"{', '.join(t.name for t in tools)} (shown to the model; no MCP server runs "
                                     "them, so their calls are shown, not run)")
            for name in servers:
                self.start_server(name)
        except UsageError as err:
            self.chat.add_notice(str(err), error=True)

    def start_server(self, name: str) -> None:
        configured = getattr(self.config, "mcp_servers", None) or {}
        if name not in configured:
            known = ", ".join(configured) or "none"
            raise UsageError(f"there is no MCP server '{name}' in the config (known: {known})",
                             f"add [mcp.servers.{name}] with command = ... or url = ...")
        if any(s.name == name for s in self.servers):
            raise UsageError(f"MCP server {name} is started already", "/tools lists its tools")
        server = McpServer(configured[name])
        self.servers.append(server)
        self.chat.add_notice(f"starting MCP server {name}…")
        self.app.run_worker(partial(self._start_work, server), name=f"mcp {name}", group="tools", thread=True,
                            exit_on_error=False)

    def _start_work(self, server: McpServer) -> None:
        try:
            tools = server.start()
        except LlmTuiError as err:
            self.app.post_message(ToolsStarted(server, error=err))
            return
        self.app.post_message(ToolsStarted(server, tools))

    def started(self, message: ToolsStarted) -> None:
        server = message.server
        if message.error is not None:
            if server in self.servers:
                self.servers.remove(server)
            self.chat.add_notice(str(message.error), error=True)
            return
        clash = [t.name for t in message.tools if t.name in self.offered]
        fresh = [t for t in message.tools if t.name not in self.offered]
        self._add(fresh, server)
        line = (f"MCP server {server.name}: {len(fresh)} tool{'s' if len(fresh) != 1 else ''} on "
                f"({', '.join(t.name for t in fresh) or 'none'}); /tools lists them, /tools off NAME turns one off")
        if clash:
            line += f"; {', '.join(clash)} left out: another tool has that name"
        self.chat.add_notice(line)
        self.turns.changed()

    def _add(self, tools: list[Tool], server: McpServer | None) -> None:
        for tool in tools:
            self.offered[tool.name] = Offered(tool, server)

    def tools_for(self, handle, *, say: bool = False) -> list[dict] | None:
        """The schemas ``handle`` is offered this turn (None: none are on, or it cannot take them; with
        ``say``, why not is said once per model)."""
        on = [o.tool.schema() for o in self.offered.values() if o.on]
        if not on or handle is None:
            return None
        why = engine_refusal(handle)
        if why is None:
            return on
        if say and (handle.info.label, why) not in self._said:
            self._said.add((handle.info.label, why))
            self.chat.add_notice(f"{handle.info.label} is offered no tools: {why}", error=True)
        return None

    def fresh_conversation(self) -> None:
        """Another conversation: every tool is on again, and each call asks again."""
        self.stop()
        self.always.clear()
        for offered in self.offered.values():
            offered.on = True

    def close(self) -> None:
        """The app ends: a call waiting for an answer (or running) stays saved so, and is asked again
        when the conversation is reopened (``pick_up``)."""
        self.round = None
        for server in self.servers:
            server.close()
        self.servers = []

    # -- /tools ----------------------------------------------------------------------------------

    def command(self, arg: str) -> None:
        words = arg.split()
        if not words:
            self.chat.add_notice(self.listing())
            return
        verb, rest = words[0], words[1:]
        if verb in ("on", "off"):
            self._switch(verb == "on", rest)
        elif verb == "mcp" and len(rest) == 1:
            self.start_server(rest[0])
        elif verb == "steps" and len(rest) == 1 and rest[0].isdigit() and int(rest[0]) > 0:
            self.max_steps = int(rest[0])
            self.chat.add_notice(f"a turn takes at most {self.max_steps} replies between tool calls")
        elif verb == "timeout" and len(rest) == 1 and _seconds(rest[0]) is not None:
            self.timeout = _seconds(rest[0])
            self.chat.add_notice(f"a tool call is waited for at most {self.timeout:g} s")
        else:
            raise UsageError(f"/tools does not take '{arg}'",
                             "/tools lists them; /tools on|off NAME..|all, /tools mcp NAME, /tools steps N, "
                             "/tools timeout SECONDS")

    def _switch(self, on: bool, names: list[str]) -> None:
        if not names:
            raise UsageError(f"/tools {'on' if on else 'off'} needs tool names or all", "/tools lists them")
        if names == ["all"]:
            names = list(self.offered)
        unknown = [n for n in names if n not in self.offered]
        if unknown:
            raise UsageError(f"there is no tool {unknown[0]!r}", "/tools lists them (Tab completes nothing here)")
        for name in names:
            self.offered[name].on = on
            if not on:
                self.always.discard(name)
        self.chat.add_notice(f"{', '.join(names) or 'no tools'} {'on' if on else 'off'} for this conversation")
        self.turns.changed()

    def listing(self) -> str:
        if not self.offered:
            configured = ", ".join(getattr(self.config, "mcp_servers", None) or {}) or "none configured"
            return (f"no tools: --tools FILE or --mcp NAME offers some; /tools mcp NAME starts a configured "
                    f"MCP server ({configured})")
        on = sum(o.on for o in self.offered.values())
        lines = [f"tools: {on} of {len(self.offered)} on · at most {self.max_steps} tool rounds a turn · a call is "
                 f"waited for {self.timeout:g} s"]
        for name, o in self.offered.items():
            mark = "✓" if o.on else "✗"
            runs = " · runs without asking" if name in self.always else ""
            lines.append(f"  {mark} {name} · {o.where}{runs} · {o.tool.description.splitlines()[0] if o.tool.description else ''}".rstrip(" ·"))
        handle = self.models.handle
        why = engine_refusal(handle) if handle is not None else None
        if why is not None:
            lines.append(f"  {handle.info.label} is offered none of them: {why}")
        return "\n".join(lines)

    # -- a tool round ----------------------------------------------------------------------------

    def refuse_turns(self) -> None:
        if self.round is not None:
            what = "a tool is running" if self.round.running is not None else "a tool call waits for your answer"
            raise UsageError(what, "answer it (y / a / n), or press Esc to stop the turn there")

    async def after_reply(self, reply: Reply, done) -> None:
        """A reply has finished: when it holds calls to tools on offer, ask about each and run them."""
        handle = self.models.handle
        known = {name for name, o in self.offered.items() if o.on}
        if (not known or handle is None or engine_refusal(handle) is not None or self.round is not None
                or done.stop_reason in ("stopped", "error") or not (done.text or done.tool_calls)):
            return
        fmt = tool_support(handle)[0]
        parsed = read_calls(fmt, done, known)
        if parsed.problem:
            self.chat.add_notice(f"the reply stays text: {parsed.problem}", error=True)
            return
        if not parsed.calls:
            return
        conversation = self.turns.conversation
        said = call_message(fmt, done.text, parsed.calls)
        conversation.messages[-1] = said  # the reply Turns just added, as the family keeps a call
        tool = {"calls": [{**c.to_json(), "outcome": "waiting"} for c in parsed.calls]}
        if said.get("metadata"):
            tool["metadata"] = said["metadata"]
        step = sum(m["role"] == "assistant" for m in conversation.since_last_user())
        self.round = Round(reply, parsed.calls, tool, step)
        reply.show_calls(tool)
        self.recorder.note_tool(reply.message_id, tool, said["content"] if said["content"] != done.text else None)
        if step >= self.max_steps:
            for index in range(len(parsed.calls)):
                self._mark(index, "step limit")
            self._end(f"the turn has had {step} replies, its tool step limit: the calls are not run "
                      "(/tools steps N raises it; type a message to go on)")
            return
        self._ask()

    def pick_up(self) -> None:
        """A reopened conversation that ended at a call still waiting for an answer (the app ended, or
        the link dropped, while it asked or ran) asks again, once the tool's server is up."""
        reply = self.chat.last_reply()
        messages = self.turns.conversation.messages
        if (self.round is not None or reply is None or not messages or messages[-1]["role"] != "assistant"
                or self.turns.turn is not None or self.models.handle is None):
            return
        calls = reply.tool.get("calls") or []
        pending = [i for i, c in enumerate(calls) if c.get("outcome") in ("waiting", "running")]
        if not pending:
            return
        if any(getattr(self.offered.get(calls[i]["name"]), "server", None) is None for i in pending):
            return  # asked again once a server offers it (``started``)
        step = sum(m["role"] == "assistant" for m in self.turns.conversation.since_last_user())
        parsed = [ToolCall(c["name"], c.get("arguments") or {}, id=c.get("id") or "") for c in calls]
        self.round = Round(reply, parsed, dict(reply.tool), step, next=pending[0])
        self.chat.add_notice("the conversation ended at a tool call waiting for your answer: it is asked again")
        self._ask()

    def _ask(self) -> None:
        """Answer the round's next call: ask (or run it when it may always run); after the last, go on."""
        r = self.round
        if r.next == len(r.calls):
            self.round = None
            self.status.set(turn="")
            self.app.call_later(self.turns.generate)  # the model reads the results and goes on
            return
        call = r.calls[r.next]
        offered = self.offered[call.name]
        if offered.server is None:
            self._mark(r.next, "no runner")
            self._end(f"the call to {call.name} is not run: it comes from {offered.where} and no MCP server runs it")
        elif call.name in self.always:
            self._run(call, offered.server)
        else:
            self.status.set(turn=f"{call.name}: run it? y / a / n")
            self.app.push_screen(ToolConsentScreen(call, offered.where, step=r.step, of=self.max_steps),
                                 partial(self._answered, r))

    def _answered(self, r: Round, answer: str | None) -> None:
        if self.round is not r:
            return  # stopped meanwhile
        call = r.calls[r.next]
        if answer == "always":
            self.always.add(call.name)
        if answer in ("yes", "always"):
            self._run(call, self.offered[call.name].server)
            return
        self._mark(r.next, "refused")
        self._end(f"the call to {call.name} was not run; the turn ends at it (type a message to go on)")

    def _run(self, call: ToolCall, server: McpServer) -> None:
        r = self.round
        self._serial += 1
        r.running = self._serial
        self._mark(r.next, "running")
        self.status.set(turn=f"running {call.name}… (Esc stops waiting)")
        self.app.run_worker(partial(self._call_work, self._serial, call, server, self.timeout), name=f"tool {call.name}",
                            group="tool", thread=True, exit_on_error=False)

    def _call_work(self, serial: int, call: ToolCall, server: McpServer, timeout: float) -> None:
        start = time.perf_counter()

        def run(c: ToolCall) -> tuple[str, bool]:
            result = server.call(c.name, c.arguments, timeout=timeout)
            return result.text, result.is_error

        outcome = run_call(call, run)
        self.app.post_message(ToolCallFinished(serial, outcome, time.perf_counter() - start))

    async def finished(self, message: ToolCallFinished) -> None:
        r = self.round
        if r is None or r.running != message.serial:
            return  # nobody waits for it any more (Esc)
        r.running = None
        outcome = message.outcome
        self._mark(r.next, "failed" if outcome.error else "ran", round(message.seconds, 3))
        text = result_text(outcome)
        said = result_message(outcome)
        self.turns.conversation.messages.append(said)
        await self.chat.add_tool_result(outcome.call.name, text, error=outcome.error, seconds=message.seconds)
        tool = {"name": outcome.call.name, "error": outcome.error, "seconds": round(message.seconds, 3)}
        if outcome.call.id:
            tool["call_id"] = outcome.call.id
        self.turns.record("tool", text, stats={"tool": tool})
        r.next += 1
        self._ask()

    def stop(self) -> bool:
        """Esc: stop the round where it is (a running call's result is dropped); False when none is on."""
        r = self.round
        if r is None:
            return False
        if r.running is not None:
            name = r.calls[r.next].name
            self._mark(r.next, "stopped")
            self._end(f"stopped waiting for {name}: its result is not given to the model; the turn ends here")
        else:
            self._mark(r.next, "stopped")
            self._end("the tool round was stopped")
        return True

    def _mark(self, index: int, outcome: str, seconds: float | None = None) -> None:
        r = self.round
        call = r.tool["calls"][index]
        call["outcome"] = outcome
        if seconds is not None:
            call["seconds"] = seconds
        r.reply.show_calls(r.tool)
        self.recorder.note_tool(r.reply.message_id, r.tool)

    def _end(self, line: str) -> None:
        self.round = None
        self.status.set(turn="")
        self.chat.add_notice(line, error=True)
        self.turns.changed()


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None
