"""Faults a user meets: a prompt past the context, stopping during a long prefill, a damaged
database, two apps on one conversation, a message sent while the model loads, quitting."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from app_helpers import (  # noqa: F401
    long_handle,
    one_torch_thread,
    screen_text,
    send,
    wait_for,
    wait_loaded,
)

from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.memory.fit import plan_turn
from backends.storage.store import Store, StoreDamaged
from tui.app import LlmTuiApp
from tui.screens.damaged_store import DamagedStoreScreen
from tui.screens.fit import FitScreen
from tui.session import Recorder
from tui.settings import AppSettings

ROOT = Path(__file__).resolve().parent.parent


def words(n: int) -> str:
    return "word " * n


# -- the context is a hard limit ---------------------------------------------------------------


def test_a_turn_past_the_context_is_planned_with_what_would_fit(tiny_handle):
    context = tiny_handle.info.max_context
    fit = plan_turn(tiny_handle, [{"role": "user", "content": words(context + 500)}],
                    SamplingParams(max_new_tokens=64))
    assert fit.over == "context" and not fit.fits
    assert f"past the model's context of {context:,}" in fit.message
    assert fit.reply_room == 0 and not fit.can_truncate  # one message alone is longer than the context
    room = plan_turn(tiny_handle, [{"role": "user", "content": words(context - 200)}],
                     SamplingParams(max_new_tokens=512))
    assert room.over == "context" and room.reply_room == context - room.prompt_tokens > 0


def test_the_app_never_sends_a_prompt_past_the_context(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot, app)
            app.turns.params = app.turns.params.with_value("max_new_tokens", "512").with_value("temperature", "0")
            too_long = words(tiny_handle.info.max_context + 100)
            app.input.load_text(too_long)
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, FitScreen), timeout=60)
            await pilot.pause()
            text = screen_text(app)
            assert "does not fit the model's context" in text and "Send anyway" not in text
            await pilot.press("s")  # no such choice here
            assert isinstance(app.screen, FitScreen)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, FitScreen))
            assert app.input.text == too_long and not app.turns.conversation.messages  # back, nothing sent
            assert not app.turns_done

            # Just inside the context, but not with 512 tokens of reply: "a shorter reply" fits.
            app.input.load_text(words(tiny_handle.info.max_context - 300))
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, FitScreen), timeout=60)
            room = app.screen.fit.reply_room
            assert 0 < room < 512
            await pilot.press("r")
            await wait_for(pilot, lambda: app.turns_done and app.turns.turn is None, timeout=120)
            done = app.turns_done[-1].done
            assert app.turns.params.max_new_tokens == room
            assert done.stats.prompt_tokens + room <= tiny_handle.info.max_context
            assert done.captured_ids == done.prompt_ids  # the chunked prefill fed exactly the preview

    asyncio.run(scenario())


def test_run_refuses_a_prompt_past_the_context_in_one_line(tiny_model_dir, tmp_path):
    prompt = words(9000)
    result = subprocess.run([sys.executable, "-m", "tui.cli", "run", str(tiny_model_dir), "-p", prompt,
                             "--max-new-tokens", "16"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "past the model's context of 8,192" in lines[0] and "shorten" in lines[0]
    assert result.stdout == ""


# -- stopping at any moment --------------------------------------------------------------------


def test_esc_during_a_long_prefill_returns_within_a_second(demo_handle):
    """A 6,000-token prompt takes the default model about half a minute to read on this CPU."""

    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: demo_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            app.input.load_text(words(6000))
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.turns.turn is not None)
            await pilot.pause(1.0)  # well inside the prefill
            assert app.turns.turn is not None and app.turns.turn.reply.n_tokens == 0
            started = time.monotonic()
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.turns.turn is None, timeout=10)
            took = time.monotonic() - started
            assert took < 1.5, took
            assert app.turns_done[-1].done.stop_reason == "stopped"
            assert app.turns.conversation.messages[-1]["role"] == "user"  # what was said is kept

    asyncio.run(scenario())


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="needs SIGTERM")
def test_sigterm_saves_and_exits_143(long_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: long_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            app.turns.params = app.turns.params.with_value("max_new_tokens", "8000")
            app.input.load_text("keep going")
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.turns.turn is not None and app.turns.turn.reply.n_tokens >= 5)
            os.kill(os.getpid(), signal.SIGTERM)
            await wait_for(pilot, lambda: not app.is_running, timeout=20)
        return app.return_code

    assert asyncio.run(scenario()) == 143


def test_a_message_sent_while_the_model_loads_is_answered_when_it_is_ready(tiny_model_dir, monkeypatch):
    import tui.controllers.registry as registry

    loaded = threading.Event()
    real_open = registry.open_model

    def slow_open(spec, progress=None):  # the real load, after the test has sent its message
        loaded.wait(30)
        return real_open(spec, progress)

    monkeypatch.setattr(registry, "open_model", slow_open)

    async def scenario():
        app = LlmTuiApp(AppSettings(models=[str(tiny_model_dir)]))
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.models.loading is not None)
            app.turns.params = app.turns.params.with_value("max_new_tokens", "4").with_value("temperature", "0")
            app.input.load_text("are you there?")
            await pilot.press("enter")
            await pilot.pause()
            assert app.models.handle is None and app.turns.waiting
            assert app.input.text == "" and "as soon as it has loaded" in screen_text(app)
            loaded.set()
            await wait_for(pilot, lambda: app.turns_done and app.turns.turn is None, timeout=120)
            assert [m["role"] for m in app.turns.conversation.messages] == ["user", "assistant"]
            assert not app.turns.waiting

    asyncio.run(scenario())


# -- the database is never made worse ----------------------------------------------------------


def damaged_database(path: Path) -> bytes:
    """A real store with a valid header and a page of garbage in the middle; returns its bytes."""
    with Store(path) as store:
        for n in range(40):
            conv = store.new_conversation("tiny", None, {})
            store.add_message(conv, "user", f"question {n} " + "x" * 2000)
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 5: page * 6] = os.urandom(page)
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return bytes(data)


def test_a_damaged_database_is_reported_and_left_alone_then_moved_aside(tiny_handle, tmp_path):
    db = tmp_path / "llm-tui.sqlite3"
    before = damaged_database(db)
    with pytest.raises(StoreDamaged, match="damaged"):
        Store(db)

    async def scenario():
        app = LlmTuiApp(AppSettings(resume="latest", store_path=str(db)), handles={0: tiny_handle})
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_loaded(pilot, app)
            await wait_for(pilot, lambda: app.sessions.store_ready)  # the database is opened in a worker
            assert app.recorder.store is None and "not saved" in app.status.info.alert
            app.turns.params = app.turns.params.with_value("max_new_tokens", "4")
            await send(pilot, app, "hello")  # the chat goes on
            assert hashlib.sha256(db.read_bytes()).digest() == hashlib.sha256(before).digest()
            assert "not saved" in screen_text(app)
            await pilot.press("f3")
            await wait_for(pilot, lambda: isinstance(app.screen, DamagedStoreScreen))
            await pilot.press("m")
            await wait_for(pilot, lambda: app.recorder.store is not None)
            assert app.status.info.alert == ""
            moved = [p for p in tmp_path.iterdir() if ".damaged-" in p.name and not p.name.endswith(("-wal", "-shm"))]
            assert len(moved) == 1 and moved[0].read_bytes() == before
            stored = app.recorder.store.load_conversation(app.recorder.conversation_id)
            assert [m.content for m in stored.messages][0] == "hello"  # the open conversation was saved

    asyncio.run(scenario())


def test_damage_found_while_running_stops_the_writing(tmp_path):
    recorder = Recorder(Store(tmp_path / "db.sqlite3"))
    heard = []
    recorder.on_damaged = heard.append
    recorder.add("user", "first")
    recorder.fail(sqlite3.DatabaseError("database disk image is malformed"))
    assert recorder.store is None and len(heard) == 1 and "malformed" in str(heard[0])
    assert recorder.add("user", "second") is None  # nothing more is written


# -- one writer per conversation ---------------------------------------------------------------


def test_two_apps_resuming_one_conversation_write_to_two(tmp_path):
    first = Recorder(Store(tmp_path / "db.sqlite3"))
    first.add("user", "hello")
    conv = first.conversation_id
    second = Recorder(Store(tmp_path / "db.sqlite3"))
    stored = second.open(conv)
    assert second.forked_from == (conv, os.getpid()) and stored.id != conv
    assert [m.content for m in stored.messages] == ["hello"]
    second.add("user", "from the second app")
    first.add("user", "from the first app")
    with Store(tmp_path / "db.sqlite3") as store:
        assert [m.content for m in store.load_conversation(conv).messages] == ["hello", "from the first app"]
        assert [m.content for m in store.load_conversation(stored.id).messages] == ["hello", "from the second app"]
    first.close()
    third = Recorder(Store(tmp_path / "db.sqlite3"))
    assert third.open(conv).id == conv and third.forked_from is None  # free again once the first let go
    third.close()
    second.close()


def test_a_clean_close_leaves_no_write_ahead_log(tmp_path):
    recorder = Recorder(Store(tmp_path / "db.sqlite3"))
    for n in range(200):
        recorder.add("user", f"message {n} " + "y" * 500)
    wal = tmp_path / "db.sqlite3-wal"
    assert wal.exists() and wal.stat().st_size > 0
    recorder.close()
    assert not wal.exists() or wal.stat().st_size == 0


# -- small ones ---------------------------------------------------------------------------------


def test_a_quantized_copy_is_named_as_such():
    assert ModelSpec(source="/m/qwen-7b").label == "qwen-7b"
    assert ModelSpec(source="/m/qwen-7b", quant="nf4").label == "qwen-7b · nf4"
    assert ModelSpec(quant="int8").label == "SmolLM2-135M-Instruct (default) · int8"
