"""Conversations are saved as they happen: kill -9 and hang-up mid-reply, --resume, the sessions screen."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from app_helpers import (  # noqa: F401
    command,
    long_handle,
    one_torch_thread,
    screen_text,
    send,
    wait_for,
    wait_loaded,
)
from terminal import TerminalApp, wait_until

from backends.core.paths import data_dir
from backends.storage.store import Store
from tui.app import LlmTuiApp
from tui.settings import AppSettings
from tui.widgets.reply import Reply, UserMessage

ROOT = Path(__file__).resolve().parent.parent


def long_reply_config() -> None:
    from backends.core.paths import config_dir

    config_dir().mkdir(parents=True, exist_ok=True)
    (config_dir() / "config.toml").write_text("[defaults]\nmax_new_tokens = 8000\ntemperature = 0\n")


def stored_reply(db: Path):
    """The last assistant message saved, or None."""
    if not db.exists():
        return None
    with Store(db) as store:
        conv_id = store.latest_conversation_id()
        if conv_id is None:
            return None
        messages = store.load_conversation(conv_id).messages
    replies = [m for m in messages if m.role == "assistant"]
    return replies[-1] if replies else None


def start_a_long_reply(model: Path) -> TerminalApp:
    long_reply_config()
    db = data_dir() / "llm-tui.sqlite3"
    app = TerminalApp(str(model))
    wait_until(lambda: b"model 1:" in app.output, 120, "the model did not load", app)
    app.type("tell me everything")
    time.sleep(0.5)
    app.type("\r")
    wait_until(lambda: stored_reply(db) is not None, 30, "the message was never sent", app)
    wait_until(lambda: len(stored_reply(db).content) > 20, 60, "no partial reply was saved", app)
    return app


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_resume_after_the_app_was_killed_mid_reply(tiny_long_model_dir):
    app = start_a_long_reply(tiny_long_model_dir)
    try:
        app.process.send_signal(signal.SIGKILL)
        app.process.wait(10)
    finally:
        app.close()
    saved = stored_reply(data_dir() / "llm-tui.sqlite3")
    assert saved.status == "partial" and saved.content

    async def scenario():
        resumed = LlmTuiApp(AppSettings(models=[str(tiny_long_model_dir)], resume="latest"))
        async with resumed.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, resumed)
            reply = resumed.chat.last_reply()
            assert reply.text == saved.content and reply.status == "partial"
            assert [type(w).__name__ for w in resumed.chat.children if isinstance(w, (UserMessage, Reply))] == \
                ["UserMessage", "Reply"]
            assert "interrupted" in screen_text(resumed)
            assert resumed.turns.conversation.messages[-1] == {"role": "assistant", "content": saved.content}
            await resumed.action_regenerate()  # carries on: the partial reply is replaced
            await wait_for(pilot, lambda: resumed.turns.turn is not None and resumed.turns.turn.reply.n_tokens > 0)
            await pilot.press("escape")
            await wait_for(pilot, lambda: resumed.turns.turn is None)
            assert len(resumed.chat.query(Reply)) == 1

    asyncio.run(scenario())


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="needs SIGHUP")
def test_hang_up_saves_the_partial_reply_and_exits(long_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: long_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            app.turns.params = app.turns.params.with_value("max_new_tokens", "8000")
            app.input.load_text("keep going")
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.turns.turn is not None and app.turns.turn.reply.n_tokens >= 10)
            db, msg_id = app.recorder.store.path, app.turns.turn.message_id
            os.kill(os.getpid(), signal.SIGHUP)  # what the terminal sends when SSH drops
            await wait_for(pilot, lambda: not app.is_running, timeout=20)
        assert app.return_code == 129
        return db, msg_id

    db, msg_id = asyncio.run(scenario())
    with Store(db) as store:
        saved = [m for m in store.load_conversation(store.latest_conversation_id()).messages if m.id == msg_id][0]
    assert saved.status == "stopped" and saved.content


def test_sessions_screen_reopens_a_conversation_and_exports(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            await command(pilot, app, "/set temperature 0")
            await command(pilot, app, "/set max_new_tokens 5")
            await send(pilot, app, "the first conversation")
            first = app.recorder.conversation_id
            await pilot.press("ctrl+n")
            await send(pilot, app, "the second conversation")
            assert app.recorder.conversation_id != first

            await pilot.press("f3")
            await pilot.pause(0.2)
            assert type(app.screen).__name__ == "SessionsScreen"
            assert "the first conversation" in screen_text(app)
            await pilot.press("down", "enter")  # newest first: the second row is the first chat
            await pilot.pause()
            assert app.recorder.conversation_id == first
            assert [m["content"] for m in app.turns.conversation.messages if m["role"] == "user"] == \
                ["the first conversation"]

            target = Path(app.recorder.store.path).parent / "out.json"
            app.input.load_text(f"/save json {target}")
            await pilot.press("enter")
            await pilot.pause()
            data = json.loads(target.read_text())
            assert data["messages"][0]["content"] == "the first conversation"
            assert data["messages"][1]["stats"]["new_tokens"] == 5
            assert data["params"]["temperature"] == 0
            md = Path(app.recorder.store.path).parent / "out.md"
            app.input.load_text(f"/save {md}")
            await pilot.press("enter")
            await pilot.pause()
            assert "the first conversation" in md.read_text()

    asyncio.run(scenario())


def test_recorder_keeps_the_store_in_step_with_the_chat(tmp_path):
    from tui.session import Recorder

    recorder = Recorder(Store(tmp_path / "db.sqlite3"))
    recorder.configure(system="sys", params={"temperature": 0.0}, model="m1", meta={"family": "x"})
    recorder.add("user", "one")
    empty = recorder.add("assistant", "", status="partial")
    recorder.drop(empty)  # stopped before its first token: not kept, as in the chat
    recorder.add("user", "two")
    reply = recorder.add("assistant", "", status="partial")
    recorder.checkpoint(reply, "par")
    recorder.finish(reply, "partial answer", "stopped")
    recorder.checkpoint(reply, "par")  # a late checkpoint never undoes the end
    recorder.configure(model="m2", meta={"family": "y"})  # written with the next message
    stored = recorder.store.load_conversation(recorder.conversation_id)
    assert [(m.role, m.content, m.status) for m in stored.messages] == [
        ("user", "one", "complete"), ("user", "two", "complete"), ("assistant", "partial answer", "stopped")]
    assert stored.model == "m1" and stored.system == "sys"
    recorder.truncate(2)  # regenerate: drop the reply
    recorder.add("assistant", "again", model="m2")
    stored = recorder.store.load_conversation(recorder.conversation_id)
    assert [m.content for m in stored.messages] == ["one", "two", "again"]
    assert stored.model == "m2" and stored.meta == {"family": "y"}


def test_a_long_conversation_opens_from_its_end_and_shows_earlier_messages_on_home(tiny_handle, tmp_path):
    """Only the last SHOWN_AT_OPEN messages are put on screen; the rest wait behind a line, come
    in a page at a time with Home, and are all in the conversation (sent, saved) meanwhile."""
    from tui.widgets.chat import EARLIER_PAGE, SHOWN_AT_OPEN, Earlier

    turns = (SHOWN_AT_OPEN + EARLIER_PAGE) // 2 + 3  # more than two pages above the screen
    db = tmp_path / "long.sqlite3"
    with Store(db) as store:
        conv = store.new_conversation(model="tiny")
        for n in range(turns):
            store.add_message(conv, "user", f"question {n}")
            store.add_message(conv, "assistant", f"answer {n}", model=f"model-{n % 3}")

    async def scenario():
        app = LlmTuiApp(AppSettings(store_path=str(db), resume=str(conv)), handles={0: tiny_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.sessions.store_ready and not app.sessions.loading)
            total = 2 * turns
            on_screen = lambda: [w.text for w in app.chat.query("UserMessage, Reply")]  # noqa: E731
            assert len(on_screen()) == SHOWN_AT_OPEN and on_screen()[-1] == f"answer {turns - 1}"
            assert app.chat.earlier_count == total - SHOWN_AT_OPEN
            assert str(app.chat.query_one(Earlier).render()) == \
                f"▲ {total - SHOWN_AT_OPEN} earlier messages · scroll up to show {EARLIER_PAGE} more, Home for all"
            # Off screen is not out of the conversation: the next prompt and a move to a new database have all.
            assert len([m for m in app.turns.conversation.messages if m["role"] != "system"]) == total
            assert [model for role, _, model in app.turns.messages_to_save() if role == "assistant"] == \
                [f"model-{n % 3}" for n in range(turns)]

            first = app.chat.query(UserMessage).first()
            app.chat.scroll_home(animate=False)  # scrolled up to the top: one page more
            await wait_for(pilot, lambda: len(on_screen()) == SHOWN_AT_OPEN + EARLIER_PAGE)
            assert app.chat.earlier_count == total - SHOWN_AT_OPEN - EARLIER_PAGE
            # ... and what was at the top stays there, not pushed down by what came in above it.
            await wait_for(pilot, lambda: 0 <= first.virtual_region.y - app.chat.scroll_y <= 1)  # its margin
            app.chat.focus()
            await pilot.press("home")  # the conversation's start: all of it
            await wait_for(pilot, lambda: len(on_screen()) == total and app.chat.scroll_y == 0)
            assert on_screen() == [t for n in range(turns) for t in (f"question {n}", f"answer {n}")]
            assert not app.chat.query(Earlier) and app.chat.earlier_count == 0

    asyncio.run(scenario())
