"""The worker bridge (batching a real generation into messages) and slash-command parsing."""

from __future__ import annotations

import threading
import time

import pytest
from app_helpers import long_handle, one_torch_thread  # noqa: F401

from backends.core.errors import UsageError
from backends.core.params import SamplingParams
from tui import commands
from tui.messages import TokensArrived, TurnDone
from tui.pump import pump_generation


def test_pump_batches_tokens_by_time_and_ends_with_turn_done(long_handle):
    posted: list[tuple[float, object]] = []
    saved: list[str] = []
    generation = long_handle.stream([{"role": "user", "content": "go"}],
                                    SamplingParams(temperature=0, max_new_tokens=300))
    result = pump_generation(generation, lambda m: posted.append((time.monotonic(), m)), 7,
                             checkpoint=saved.append, checkpoint_interval=0.2)
    messages = [m for _, m in posted]
    assert isinstance(messages[-1], TurnDone) and messages[-1].turn == 7
    assert messages[-1].view is generation.view and result.done.captured_ids == generation.view.ids
    batches = [m for m in messages if isinstance(m, TokensArrived)]
    assert all(isinstance(m, TokensArrived) for m in messages[:-1])
    assert "".join(b.text for b in batches) == result.done.text == generation.text
    assert sum(b.n_tokens for b in batches) == result.done.stats.new_tokens == 300
    times = [t for t, m in posted if isinstance(m, TokensArrived)]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) >= 2 and min(gaps[:-1]) >= 0.045  # never more often than every ~50 ms
    assert len(batches) < 300  # batched, not one message per token
    assert saved and all(result.done.text.startswith(s) for s in saved)


def test_pump_stops_the_generation_when_the_worker_is_cancelled(long_handle):
    cancelled = threading.Event()
    posted = []

    def post(message):
        posted.append(message)
        if isinstance(message, TokensArrived):
            cancelled.set()

    generation = long_handle.stream([{"role": "user", "content": "go"}],
                                    SamplingParams(temperature=0, max_new_tokens=100_000))
    result = pump_generation(generation, post, 1, cancelled=cancelled)
    generation.join(5)
    assert result.done.stop_reason == "stopped" and result.done.stats.new_tokens < 100_000
    assert not generation.thread.is_alive()


def test_slash_commands_parse_and_complete():
    assert commands.parse("hello") is None
    assert commands.parse("//etc/hosts is a path") is None
    assert commands.literal("//etc/hosts") == "/etc/hosts"
    assert commands.parse("/set temperature 0.2") == commands.Parsed("set", "temperature 0.2")
    assert commands.parse("/SYSTEM  Be brief.\nVery.") == commands.Parsed("system", "Be brief.\nVery.")
    with pytest.raises(UsageError, match="did you mean /set or /seed"):
        commands.parse("/se 1")
    with pytest.raises(UsageError):
        commands.parse_set("temperature")
    assert commands.parse_set("top-p 0.5") == ("top_p", "0.5")
    assert commands.parse_save("") == (("md", "json"), None)
    assert commands.parse_save("json out.json") == (("json",), "out.json")
    assert commands.parse_save("notes.md") == (("md",), "notes.md")
    with pytest.raises(UsageError):
        commands.parse_save("notes.txt")
    assert commands.complete("/se") == ["/set ", "/seed ", "/sessions"]
    assert commands.complete("/set rep") == ["/set repetition_penalty "]
    assert commands.complete("/model ti", models=["tiny-a", "tiny-b", "qwen"]) == ["/model tiny-a", "/model tiny-b"]
    assert commands.common_prefix(["/model tiny-a", "/model tiny-b"]) == "/model tiny-"
    assert commands.complete("hello") == []
