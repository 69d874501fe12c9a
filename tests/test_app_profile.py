"""Memory profiles run inside the app (/profile, p and Esc on the memory screen), on tiny real models."""

from __future__ import annotations

import asyncio

from app_helpers import (  # noqa: F401
    command,
    long_handle,
    one_torch_thread,
    screen_text,
    send,
    wait_for,
    wait_loaded,
)

from backends.profile.measure import ProfileRow
from tui.app import LlmTuiApp
from tui.screens.memory import MemoryPlot, MemoryScreen
from tui.settings import AppSettings
from tui.widgets.reply import Notice, UserMessage
from tui.widgets.profile_table import profile_table

#: KV bytes per token of the tiny Llama: 2 layers x 2 KV heads x head_dim 16 x K and V x fp32.
PER_TOKEN = 2 * 2 * 16 * 2 * 4
#: Many short lengths: a profile that is still running when the test acts on it.
MANY = ",".join(str(n) for n in range(16, 16 + 4 * 40, 4))


def errors(app) -> list[str]:
    return [str(n.render()) for n in app.chat.query(Notice) if n.has_class("-error")]


async def submit(pilot, app, text: str) -> None:
    """Put ``text`` in the input and submit it as Enter does; wait for it to be taken or refused.

    (Pilot's key presses wait for the process to go idle, and a profile or a
    reply keeps a core busy, so they take seconds each here.)"""
    before = len(errors(app)), len(app.chat.query(UserMessage)), app.profiles.running
    app.input.load_text(text)
    app.input.action_submit()
    await wait_for(pilot, lambda: (len(errors(app)), len(app.chat.query(UserMessage)), app.profiles.running) != before)


def test_profile_command_opens_the_memory_screen_with_a_linear_kv_cache(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_loaded(pilot, app)
            app.profiles.decode_tokens = 2
            await command(pilot, app, "/profile 16,32")
            await wait_for(pilot, lambda: app.profiles.running is None and isinstance(app.screen, MemoryScreen))
            await pilot.pause()
            rows = app.profiles.rows
            assert [r.context_tokens for r in rows] == [16, 32]
            assert [r.kv_bytes for r in rows] == [16 * PER_TOKEN, 32 * PER_TOKEN]  # linear in the context
            assert all(r.decode_tokens == 2 and r.peak_bytes > 0 for r in rows)
            assert app.profiles.label == tiny_handle.info.label
            assert app.status.info.profile == ""
            screen = app.screen
            assert screen.profile_rows == rows
            main, kv = screen.query(MemoryPlot)
            assert main.render().plain.count("◆") == 2 and kv.render().plain.count("◇") == 2
            text = screen_text(app)
            assert f"profile of {tiny_handle.info.label}" in text
            assert "prefill tok/s" in text and "decode tok/s" in text and "512 B" in text  # KV/token
            assert "profile done: 2 lengths" in text and "p run a profile" in text
            await pilot.press("escape")
            assert not isinstance(app.screen, MemoryScreen)
            await pilot.press("f9")  # reopened: the profile is still there
            assert isinstance(app.screen, MemoryScreen) and app.screen.profile_rows == rows
            await pilot.press("escape")

    asyncio.run(scenario())


def test_escape_on_the_memory_screen_stops_and_keeps_the_partial_rows(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            app.profiles.decode_tokens = 200  # long enough to act while it runs (Esc stops between steps)
            await command(pilot, app, f"/profile {MANY}")
            run = app.profiles.running
            assert run is not None and len(run.lengths) == 40
            assert app.status.info.profile.startswith("profiling")
            await wait_for(pilot, lambda: app.profiles.running is not None and app.profiles.running.rows)
            await pilot.press("f9")
            assert isinstance(app.screen, MemoryScreen)
            assert "Esc stop the profile" in screen_text(app)
            await pilot.press("escape")  # stops the profile; the screen stays
            await wait_for(pilot, lambda: app.profiles.running is None)
            await pilot.pause()
            rows = app.profiles.rows
            assert 1 <= len(rows) < 40
            assert all(r.kv_bytes == r.context_tokens * PER_TOKEN for r in rows)
            assert isinstance(app.screen, MemoryScreen) and app.screen.profile_rows == rows
            text = screen_text(app)
            assert f"profile stopped: {len(rows)} of 40 lengths measured" in text
            await pilot.press("escape")  # now it closes
            assert not isinstance(app.screen, MemoryScreen)

    asyncio.run(scenario())


def test_p_on_the_memory_screen_profiles_the_default_lengths(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_loaded(pilot, app)
            app.profiles.decode_tokens = 1
            await pilot.press("f9")
            assert isinstance(app.screen, MemoryScreen) and not app.screen.profile_rows
            await pilot.press("p")
            await wait_for(pilot, lambda: app.profiles.running is None and app.profiles.rows, timeout=120)
            await pilot.pause()
            assert [r.context_tokens for r in app.profiles.rows] == [256, 512, 1024, 2048]
            assert len(app.screen_stack) == 2  # the open screen was updated, not a second one pushed
            assert app.screen.profile_rows == app.profiles.rows
            assert "2,048" in screen_text(app)

    asyncio.run(scenario())


def test_bad_lengths_are_one_notice_each(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            for bad, says in (("/profile 12,abc", "'abc' is not a positive number of tokens"),
                              ("/profile 0", "'0' is not a positive number of tokens"),
                              ("/profile 9000", "past the model's context of 8192 tokens")):
                before = len(errors(app))
                await command(pilot, app, bad)
                assert len(errors(app)) == before + 1, bad
                assert says in errors(app)[-1] and "/profile" in errors(app)[-1]
                assert app.profiles.running is None and not isinstance(app.screen, MemoryScreen)
                assert app.input.text == bad  # kept to fix
            app.input.clear()
            palette = {c.title: c for c in app.get_system_commands(app.screen)}
            palette["Memory: run a profile"].callback()  # the default lengths, like /profile alone
            assert app.profiles.running is not None and app.profiles.running.lengths == [256, 512, 1024, 2048]
            app.profiles.stop()
            await wait_for(pilot, lambda: app.profiles.running is None)

    asyncio.run(scenario())


def test_sending_while_profiling_is_refused(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            app.turns.params = app.turns.params.with_value("max_new_tokens", "2")
            app.profiles.decode_tokens = 200  # long enough to act while it runs (Esc stops between steps)
            await submit(pilot, app, f"/profile {MANY}")
            assert app.profiles.running is not None
            await submit(pilot, app, "hello")
            assert errors(app)[-1] == ("a memory profile is running — wait for it, or press Esc in the "
                                       "memory screen (F9) to stop it")
            assert app.input.text == "hello" and not app.chat.query(UserMessage)
            await submit(pilot, app, "/profile 16")
            assert errors(app)[-1].startswith("a memory profile is already running")
            app.input.clear()
            assert app.profiles.stop()
            # Stopped from elsewhere: the partial profile is shown when it ends.
            await wait_for(pilot, lambda: app.profiles.running is None and isinstance(app.screen, MemoryScreen))
            await pilot.press("escape")
            await send(pilot, app, "hello")  # the model answers again
            assert app.chat.query(UserMessage) and app.turns_done

    asyncio.run(scenario())


def test_a_profile_while_a_reply_is_generated_is_refused(long_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: long_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", "5000")
            app.input.load_text("go on forever")
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.turns.turn is not None and app.turns.turn.reply.n_tokens >= 1)
            await submit(pilot, app, "/profile 16")
            assert errors(app)[-1].startswith("a reply is still being generated")
            assert app.profiles.running is None
            app.input.clear()
            app.action_stop()
            await wait_for(pilot, lambda: app.turns.turn is None)

    asyncio.run(scenario())


def test_the_profile_belongs_to_its_model(tiny_model_dir, tiny_long_model_dir, tiny_handle, long_handle):
    async def scenario():
        settings = AppSettings(models=[str(tiny_model_dir), str(tiny_long_model_dir)], keep_loaded=True)
        app = LlmTuiApp(settings, handles={0: tiny_handle, 1: long_handle})
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            app.profiles.decode_tokens = 1
            await command(pilot, app, "/profile 16")
            await wait_for(pilot, lambda: app.profiles.running is None and isinstance(app.screen, MemoryScreen))
            assert len(app.profiles.rows) == 1
            await pilot.press("escape")
            app.action_switch_model(2)
            await wait_for(pilot, lambda: app.models.active == 1)
            assert app.profiles.rows == [] and app.profiles.label is None
            await pilot.press("f9")
            assert isinstance(app.screen, MemoryScreen) and not app.screen.profile_rows
            await pilot.press("escape")

    asyncio.run(scenario())


def test_the_profile_table_lines_up_and_shows_an_out_of_memory_line():
    rows = [ProfileRow(context_tokens=c, decode_tokens=2, peak_bytes=600 * 2**20 + c * 1024, kv_bytes=c * 512,
                       prefill_tok_s=1000.0 + c, decode_tok_s=40.0) for c in range(256, 256 * 11, 256)]
    lines = profile_table(rows[:2] + [ProfileRow(context_tokens=4096, decode_tokens=2, error="out of memory")])
    assert lines[0].split() == ["context", "peak", "KV", "cache", "KV/token", "prefill", "tok/s", "decode", "tok/s"]
    assert lines[1].split() == ["256", "600.2", "MiB", "128.0", "KiB", "512", "B", "1,256.0", "40.0"]
    assert lines[3] == "  4,096  out of memory"
    assert len({len(line) for line in lines[:3]}) == 1  # the columns line up
    many = profile_table(rows, max_rows=4)  # 10 rows in 4 lines: the first, how many are left out, the last two
    assert [line.split()[0] for line in many] == ["context", "256", "⋮", "2,304", "2,560"]
    assert many[2].split() == ["⋮", "7", "more"]
