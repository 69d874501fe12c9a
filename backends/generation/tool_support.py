"""Whether a loaded model can be offered tools, and how the calls in its replies are read."""

from __future__ import annotations

from backends.prompt.tools.calls import call_format

#: Why the native engine gets no tools, and what does: the vendors' own methods read a call by running
#: it (ChatGLM3's ``process_response`` hands the reply's ``tool_call(...)`` to ``eval`` once the history
#: has tools), and llm-tui reads a call as data only.
NATIVE_NO_TOOLS = ("tools are not sent through the native engine: a vendor's own chat method may run a call's "
                   "text (ChatGLM3's stream_chat passes it to eval())", "--engine auto reads this model's calls as data")


def tool_support(handle) -> tuple[str | None, str | None]:
    """``(format, why_not)``: the format calls are read in from the reply's text (None: only the calls
    a server reads itself, its ``tool_calls``, count), or one line saying why this model is offered none."""
    runner = handle.runner
    engine = getattr(runner, "name", "")
    family = handle.family
    if engine == "native":
        return None, f"{NATIVE_NO_TOOLS[0]} ({NATIVE_NO_TOOLS[1]})"
    if not getattr(family, "supports_tools", False):
        return None, f"the {family.name} prompt format has no place for tools"
    fmt = call_format(family)
    if engine == "remote":
        return fmt, None  # a server whose template format is unknown here reads the calls itself (chat API)
    if fmt is None:
        return None, (f"the {family.name} chat template writes no tool calls llm-tui reads (<tool_call> JSON, "
                      "Llama 3.1 JSON, GLM's name line)")
    return fmt, None
