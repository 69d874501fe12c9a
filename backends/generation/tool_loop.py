"""A turn that may call tools: the reply, the calls read from it, the results fed back in the
family's own role, and the model going on, up to a step limit.

Whether a call runs is never decided here: ``decide(call)`` says yes or no (the
user's consent in the app, ``--allow-tool`` headless), and ``run(call)`` runs it
(an MCP server). A call that is refused ends the turn at the call; a tool that
fails or hangs is one line in its result and the model is told so. The call's
own words stay in the conversation as the model wrote them (its token IDs are
what the next prompt holds).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from backends.core.errors import LlmTuiError, UsageError, error_line
from backends.core.events import DoneEvent, TokenEvent
from backends.core.params import SamplingParams
from backends.generation.tool_support import tool_support
from backends.prompt.tools.calls import ParsedReply, ToolCall, calls_from_api, parse_reply
from backends.prompt.tools.definitions import Tool

#: Replies (and tool rounds between them) one turn may take before it is ended.
MAX_TOOL_STEPS = 5


@dataclass(frozen=True)
class ToolOutcome:
    """What became of one call: its result text (``error``: the tool failed), or that it was refused."""

    call: ToolCall
    text: str = ""
    error: bool = False
    refused: bool = False


@dataclass
class ToolStep:
    """One reply of the turn, the calls read from it, and what each came to."""

    done: DoneEvent
    parsed: ParsedReply
    outcomes: list[ToolOutcome] = field(default_factory=list)


def read_calls(fmt: str | None, done: DoneEvent, known: set[str]) -> ParsedReply:
    """A finished reply's calls: those the server read itself (``tool_calls``), else those its text
    holds in the family's format ``fmt``."""
    if done.tool_calls:
        return calls_from_api(done.text, done.tool_calls, known)
    return parse_reply(fmt, done.text, known)


def call_message(fmt: str | None, text: str, calls: list[ToolCall] = ()) -> dict:
    """The reply that made the calls, as the conversation keeps it: the model's own words. ChatGLM3's
    and GLM-4's tool name is the message's metadata (``<|assistant|>NAME\\n...``), as ChatGLM3's
    ``process_response`` keeps it and GLM-4's template writes it back;
    calls a server read itself go as the chat API's ``tool_calls`` (arguments as a dict, as templates read them)."""
    if any(c.id for c in calls):
        return {"role": "assistant", "content": text, "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]}
    if fmt in ("chatglm3", "glm4"):
        name, _, rest = text.lstrip("\n").partition("\n")
        return {"role": "assistant", "metadata": name.strip(), "content": rest}
    return {"role": "assistant", "content": text}


def result_text(outcome: ToolOutcome) -> str:
    """What the model reads of a call's result (a failure says so)."""
    return outcome.text if not outcome.error else f"error: {outcome.text}"


def result_message(outcome: ToolOutcome) -> dict:
    """A call's result as a conversation message: role ``tool``, which each family renders in the
    role it reads results in (ChatGLM3's ``<|observation|>``, a template's own ``tool`` turn)."""
    message = {"role": "tool", "name": outcome.call.name, "content": result_text(outcome)}
    if outcome.call.id:
        message["tool_call_id"] = outcome.call.id
    return message


def check_tool_format(handle) -> str | None:
    """The call format of ``handle``'s replies (None: a server reads the calls); one line when it has none."""
    fmt, why = tool_support(handle)
    if why is not None:
        raise UsageError(why, "use a model whose chat template has tool calls (Qwen2.5, Llama 3.1, ChatGLM3, GLM-4)")
    return fmt


def tool_turn(handle, messages: list[dict], params: SamplingParams, tools: list[Tool], *,
              decide: Callable[[ToolCall], bool], run: Callable[[ToolCall], tuple[str, bool]],
              stop: threading.Event | None = None, max_steps: int = MAX_TOOL_STEPS,
              prefix: list[TokenEvent] | None = None,
              on_event: Callable[[object], None] = lambda event: None) -> tuple[list[ToolStep], list[dict]]:
    """Answer ``messages`` with ``tools`` on offer; returns the steps and the messages the turn added
    (replies with calls, results, the last reply). ``on_event`` hears every ``TokenEvent`` and
    ``DoneEvent`` of each reply, then each ``ToolCall`` and ``ToolOutcome``. ``prefix`` starts the
    first reply from those exact tokens (a branch)."""
    fmt = check_tool_format(handle)
    stop = stop or threading.Event()
    schemas = [t.schema() for t in tools]
    known = {t.name for t in tools}
    conversation = list(messages)
    added: list[dict] = []
    steps: list[ToolStep] = []
    for number in range(max_steps):
        generation = handle.stream(conversation, params, stop, prefix=prefix if number == 0 else None, tools=schemas)
        done = None
        for event in generation:
            on_event(event)
            if isinstance(event, DoneEvent):
                done = event
        parsed = read_calls(fmt, done, known)
        step = ToolStep(done, parsed)
        steps.append(step)
        if not parsed.calls or stop.is_set() or done.stop_reason in ("stopped", "error"):
            added.append({"role": "assistant", "content": done.text})
            break
        said = call_message(fmt, done.text, parsed.calls)
        conversation.append(said)
        added.append(said)
        for call in parsed.calls:
            on_event(call)
            outcome = run_call(call, run) if decide(call) else ToolOutcome(call, refused=True)
            step.outcomes.append(outcome)
            on_event(outcome)
            if outcome.refused:
                return steps, added  # the turn ends at the call: nothing ran
            result = result_message(outcome)
            conversation.append(result)
            added.append(result)
        if stop.is_set():
            break
    return steps, added


def run_call(call: ToolCall, run: Callable[[ToolCall], tuple[str, bool]]) -> ToolOutcome:
    """Run a call the user allowed; whatever goes wrong is one line in its outcome."""
    try:
        text, error = run(call)
    except LlmTuiError as err:  # a tool that failed, hung past its timeout, or whose server is gone
        return ToolOutcome(call, str(err), error=True)
    except Exception as err:  # noqa: BLE001 — one line for the model and the user, the turn goes on
        return ToolOutcome(call, error_line(err), error=True)
    return ToolOutcome(call, text, error=error)
