"""Storage faults: a data folder that cannot be written, an error nobody foresaw, and a long
conversation opened without holding up the screen (the database is read in a worker)."""

from __future__ import annotations

import asyncio
import threading

from app_helpers import screen_text, send, wait_for, wait_loaded

from backends.core.paths import data_dir
from backends.storage.store import Store
from tui import cli, headless
from tui.app import LlmTuiApp
from tui.settings import AppSettings


def test_an_unwritable_data_folder_is_one_line_and_the_chat_goes_on(tiny_handle, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    monkeypatch.setenv("LLM_TUI_DATA_DIR", str(blocker / "data"))

    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_loaded(pilot, app)
            await wait_for(pilot, lambda: "will not be saved" in screen_text(app))
            text = " ".join(screen_text(app).split())
            assert "conversations will not be saved: cannot create" in text
            assert "LLM_TUI_DATA_DIR" in text  # what to do about it
            await send(pilot, app, "hello")  # nothing is saved, and nothing else is lost
            assert app.turns_done and app.turns_done[-1].done.error is None
            assert app.recorder.store is None

    asyncio.run(scenario())


def test_an_unforeseen_error_ends_with_one_line_and_the_traceback_only_with_debug(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("the table has no row 7")

    monkeypatch.setattr(headless, "cmd_models", broken)
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["llm-tui: error: RuntimeError: the table has no row 7 (--debug shows where)"]

    assert cli.main(["models", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert err.splitlines()[-1] == "llm-tui: error: RuntimeError: the table has no row 7"


def said(app) -> list[dict]:
    """The conversation's user and assistant messages (the system prompt is one more)."""
    return [m for m in app.turns.conversation.messages if m["role"] != "system"]


def hundred_turns(db_path) -> int:
    """A saved 100-turn conversation whose prompts grow turn by turn, as real ones do."""
    with Store(db_path) as store:
        conv_id = store.new_conversation(model="tiny", system="be brief")
        prompt: list[int] = [1, 2, 3]
        for turn in range(100):
            store.add_message(conv_id, "user", f"question {turn}")
            prompt = prompt + list(range(100 + turn, 140 + turn))
            store.add_message(conv_id, "assistant", f"answer {turn}", prompt_ids=prompt, captured_ids=prompt)
            prompt = prompt + list(range(200, 230))
        return conv_id


def test_a_long_conversation_is_checked_and_read_off_the_ui_thread(tiny_handle, monkeypatch):
    conv_id = hundred_turns(data_dir() / "llm-tui.sqlite3")
    on_ui_thread: list[str] = []
    watching = [True]
    check, load = Store._check_integrity, Store.load_conversation

    def spied_check(self):
        if watching and threading.current_thread() is threading.main_thread():
            on_ui_thread.append("quick_check")
        return check(self)

    def spied_load(self, *args, **kwargs):
        if watching and threading.current_thread() is threading.main_thread():
            on_ui_thread.append("load_conversation")
        return load(self, *args, **kwargs)

    monkeypatch.setattr(Store, "_check_integrity", spied_check)
    monkeypatch.setattr(Store, "load_conversation", spied_load)

    async def scenario():
        app = LlmTuiApp(AppSettings(resume="latest"), handles={0: tiny_handle})
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_loaded(pilot, app)
            await wait_for(pilot, lambda: len(said(app)) == 200)
            assert app.recorder.conversation_id == conv_id
            assert app.turns.conversation.messages[-1]["content"] == "answer 99"
            await wait_for(pilot, lambda: not app.sessions.loading)  # the gate opens once it is all on screen
            await send(pilot, app, "one more")  # the resumed conversation goes on
        assert on_ui_thread == []
        watching.clear()  # the test's own reading below is on this thread
        with Store(data_dir() / "llm-tui.sqlite3") as store:
            saved = store.load_conversation(conv_id).messages
        assert [m.content for m in saved[-2:-1]] == ["one more"] and len(saved) == 202

    asyncio.run(scenario())


def test_a_message_sent_while_a_conversation_is_on_its_way_waits_for_it(tiny_handle, monkeypatch):
    hundred_turns(data_dir() / "llm-tui.sqlite3")
    disk = threading.Event()  # a slow disk: the read finishes when the test says
    load = Store.load_conversation

    def slow_load(self, *args, **kwargs):
        disk.wait(30)
        return load(self, *args, **kwargs)

    monkeypatch.setattr(Store, "load_conversation", slow_load)

    async def scenario():
        app = LlmTuiApp(AppSettings(resume="latest"), handles={0: tiny_handle})
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_loaded(pilot, app)
            app.input.load_text("too early")
            await pilot.press("enter")
            await pilot.pause()
            assert "a saved conversation is being opened" in " ".join(screen_text(app).split())
            assert app.input.text == "too early"  # kept, to send once the conversation is there
            assert said(app) == []
            disk.set()
            await wait_for(pilot, lambda: len(said(app)) == 200)
            await send(pilot, app, "too early")
            assert app.turns.conversation.messages[-2]["content"] == "too early"

    asyncio.run(scenario())
