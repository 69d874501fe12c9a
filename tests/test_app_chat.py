"""The full-screen app driven with Pilot: sending, streaming, stopping, regenerating, editing."""

from __future__ import annotations

import asyncio
import time

from app_helpers import (  # noqa: F401
    command,
    generation_threads,
    long_handle,
    one_torch_thread,
    screen_text,
    send,
    wait_for,
    wait_loaded,
)

from tui.app import LlmTuiApp
from tui.settings import AppSettings
from tui.widgets.reply import SHOWN_CHARS, Notice, Reply, UserMessage


def greedy(app, max_new_tokens: int = 24) -> None:
    app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", str(max_new_tokens))


def test_default_model_streams_paris(demo_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: demo_handle})
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_loaded(pilot, app)
            await command(pilot, app, "/set temperature 0")
            batches = []
            original = app.chat.add_reply

            async def spy(*args, **kwargs):  # watch the reply grow through the stream
                reply = await original(*args, **kwargs)
                write = reply.write

                async def counting(delta, n):
                    batches.append(n)
                    return await write(delta, n)

                reply.write = counting
                return reply

            app.chat.add_reply = spy
            await send(pilot, app, "What is the capital of France?")
            reply = app.chat.last_reply()
            assert "Paris" in reply.text
            assert reply.status == "complete"
            done = app.turns_done[-1].done
            assert done.stop_reason == "eos"
            # every token but the end-of-turn one reached the reply, in more than one batch
            assert len(batches) >= 2 and sum(batches) == done.stats.new_tokens - 1
            assert app.turns.conversation.messages[-1] == {"role": "assistant", "content": reply.text}
            text = screen_text(app)
            assert "The capital of France is Paris." in text
            assert "tok/s" in text and "TTFT" in text  # the stats line and the status bar
            assert app.status.info.context_used > 0

    asyncio.run(scenario())


def test_escape_stops_and_keeps_the_partial_reply(long_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: long_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            greedy(app, 5000)
            app.input.load_text("go on forever")
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.turns.turn is not None and app.turns.turn.reply.n_tokens >= 5)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.turns.turn is None)
            reply = app.chat.last_reply()
            assert reply.status == "stopped" and reply.has_class("-stopped")
            assert 0 < app.turns_done[-1].done.stats.new_tokens < 5000
            assert "stopped" in screen_text(app)
            assert app.turns.conversation.messages[-1]["role"] == "assistant"  # the partial reply is kept
            deadline = time.monotonic() + 5
            while generation_threads() and time.monotonic() < deadline:
                await pilot.pause(0.05)
            assert not generation_threads()
            stored = app.recorder.store.load_conversation(app.recorder.conversation_id)
            assert stored.messages[-1].status == "stopped" and stored.messages[-1].content == reply.text

    asyncio.run(scenario())


def test_regenerate_and_edit_the_last_message(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            greedy(app, 8)
            await send(pilot, app, "first question")
            first = app.chat.last_reply().text
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: len(app.turns_done) == 2 and app.turns.turn is None)
            assert len(app.chat.query(Reply)) == 1  # replaced, not added
            assert app.chat.last_reply().text == first  # greedy: the same answer again
            assert [m["role"] for m in app.turns.conversation.messages] == ["user", "assistant"]

            await pilot.press("ctrl+o")  # edit: the message goes back into the input
            await pilot.pause()
            assert app.input.text == "first question"
            assert not app.chat.query(UserMessage) and not app.chat.query(Reply)
            app.input.load_text("second question")
            await pilot.press("enter")
            await wait_for(pilot, lambda: len(app.turns_done) == 3 and app.turns.turn is None)
            users = [m["content"] for m in app.turns.conversation.messages if m["role"] == "user"]
            assert users == ["second question"]
            stored = app.recorder.store.load_conversation(app.recorder.conversation_id)
            assert [m.content for m in stored.messages if m.role == "user"] == ["second question"]
            assert len(stored.messages) == 2

    asyncio.run(scenario())


def test_slash_commands_and_bad_input(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            for name, value in (("temperature", "0.25"), ("top_p", "0.5"), ("top_k", "7"),
                                ("repetition_penalty", "1.1"), ("max_new_tokens", "9"), ("seed", "3")):
                await command(pilot, app, f"/set {name} {value}")
                assert str(getattr(app.turns.params, name)) == value
            await command(pilot, app, "/seed 11")
            assert app.turns.params.seed == 11
            await command(pilot, app, "/system You are terse.")
            assert app.turns.conversation.messages[0] == {"role": "system", "content": "You are terse."}
            await command(pilot, app, "/system")  # puts the prompt back to edit
            assert app.input.text == "/system You are terse."
            app.input.clear()

            notices = lambda: [n for n in app.chat.query(Notice) if n.has_class("-error")]
            for bad in ("/set temperature hot", "/set nonsense 1", "/set top_p 7", "/frobnicate", "/seed"):
                before = len(notices())
                await command(pilot, app, bad)
                assert len(notices()) == before + 1, bad
                assert app.input.text == bad  # nothing lost: the text stays to be fixed
            assert app.turns.params.temperature == 0.25 and app.turns.params.top_p == 0.5
            app.input.clear()

            await send(pilot, app, "hello")
            conv_id = app.recorder.conversation_id
            await command(pilot, app, "/save")
            exports = list((app.recorder.store.path.parent / "exports").glob(f"conversation-{conv_id}.*"))
            assert sorted(p.suffix for p in exports) == [".json", ".md"]
            await command(pilot, app, "/clear")
            assert [m["role"] for m in app.turns.conversation.messages] == ["system"]
            assert not app.chat.query(Reply)
            await command(pilot, app, "/new")
            assert app.recorder.conversation_id is None
            await command(pilot, app, "/help")
            assert type(app.screen).__name__ == "HelpScreen"
            await pilot.press("escape")

    asyncio.run(scenario())


def test_tab_completes_and_up_recalls_history(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            app.input.focus()
            await pilot.press("slash", "s", "e", "t", "space", "t", "e", "m", "tab")
            assert app.input.text == "/set temperature "
            await pilot.press("0", "enter")
            assert app.turns.params.temperature == 0 and app.input.text == ""
            await pilot.press("up")
            assert app.input.text == "/set temperature 0"
            await pilot.press("down")
            assert app.input.text == ""
            await pilot.press("h", "i", "ctrl+j", "t", "h", "e", "r", "e")
            assert app.input.text == "hi\nthere"  # Ctrl+J is a newline, not a send
            assert not app.chat.query(UserMessage)

    asyncio.run(scenario())


def test_a_huge_paste_does_not_freeze_the_app(tiny_handle):
    async def scenario():
        from textual import events

        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            text = ("All work and no play makes Jack a dull boy. " * 20 + "\n") * 600  # ~530 kB
            gaps = []
            last = [time.perf_counter()]

            def tick():
                now = time.perf_counter()
                gaps.append(now - last[0])
                last[0] = now

            app.set_interval(0.02, tick)
            await pilot.pause(0.1)
            start = time.perf_counter()
            app.input.focus()
            app.post_message(events.Paste(text))  # as the terminal driver delivers it
            await wait_for(pilot, lambda: app.input.text == text, timeout=30)
            # The preview of a ~120k-token prompt is built in a worker while the screen stays live.
            await wait_for(pilot, lambda: app.inspector.view is not None and len(app.inspector.view.ids) > 50_000,
                           timeout=60)
            assert time.perf_counter() - start < 60
            assert max(gaps) < 2.0, max(gaps)
            await pilot.press("a")  # still typing
            assert app.input.text.endswith("a")

            shown = app.chat.add_user(text)  # the chat shows the start of a huge message
            await pilot.pause()
            drawn = str(shown.render())
            assert drawn == text[:SHOWN_CHARS] + f"\n… ({len(text) - SHOWN_CHARS:,} more characters not shown)"

    asyncio.run(scenario())
