"""The side panes in the app: the live prompt preview, the meter, hiding and zooming, palette and themes."""

from __future__ import annotations

import asyncio

from app_helpers import one_torch_thread, screen_text, send, wait_for, wait_loaded  # noqa: F401
from textual.binding import Binding

from tui.app import LlmTuiApp
from tui.settings import AppSettings


def test_inspector_previews_while_typing_and_checks_after_sending(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(system="Be brief."), handles={0: tiny_handle})
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_loaded(pilot, app)
            app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", "4")
            app.input.focus()

            def preview_of(draft):
                return tiny_handle.render([*app.turns.conversation.copy_messages(),
                                           {"role": "user", "content": draft}]).ids

            await pilot.press(*"Hi")
            await wait_for(pilot, lambda: app.inspector.view is not None and app.inspector.view.ids == preview_of("Hi"))
            await pilot.press(*" there")  # typed fast: one debounced preview, not one per key
            await wait_for(pilot, lambda: app.inspector.view.ids == preview_of("Hi there"))
            assert app.status.info.context_used == len(preview_of("Hi there"))
            assert app.inspector.verdict is None

            await pilot.press("enter")
            await wait_for(pilot, lambda: app.turns_done and app.turns.turn is None)
            await pilot.pause()
            assert app.inspector.verdict is True  # captured IDs == the preview
            assert app.inspector.check.ids == app.turns_done[-1].done.captured_ids == app.inspector.view.ids
            assert "✓" in screen_text(app)
            await pilot.press("f4")
            assert app.inspector.mode != "pieces"

    asyncio.run(scenario())


def test_meter_shows_the_cpu_fallback_and_logs_turns(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_loaded(pilot, app)
            await wait_for(pilot, lambda: app.meter.sample is not None, timeout=20)
            if not app.meter.sample.has_gpu:
                text = screen_text(app)
                assert "RSS" in text and "CPU" in text
            app.turns.params = app.turns.params.with_value("max_new_tokens", "3")
            await send(pilot, app, "hello")
            assert [t.turn for t in app.meter.turns] == [1]
            stats = app.turns_done[-1].done.stats
            assert app.meter.turns[0].context_tokens == stats.prompt_tokens + stats.new_tokens

    asyncio.run(scenario())


def test_panes_hide_and_zoom_from_the_keyboard(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(frozen=True), handles={0: tiny_handle})
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_loaded(pilot, app)
            side = app.inspector.parent
            assert side.display and side.region.width > 0
            await pilot.press("f5")
            assert not app.inspector.display and app.meter.display
            await pilot.press("f6")
            assert not side.display  # both hidden: the chat takes the width
            await pilot.press("f5", "f6")
            assert side.display and app.inspector.display and app.meter.display
            await pilot.press("f7")
            assert app.screen.maximized is app.inspector
            await pilot.press("f7")
            assert app.screen.maximized is None
            await pilot.press("f8")
            assert app.screen.maximized is app.meter
            await pilot.press("escape")
            assert app.screen.maximized is None

        app = LlmTuiApp(AppSettings(frozen=True), handles={0: tiny_handle})
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_loaded(pilot, app)
            assert app.inspector.parent.region.width == 0  # narrow: the side panes step aside
            await pilot.press("f5")
            assert app.screen.maximized is app.inspector
            await pilot.press("escape")
            assert app.screen.maximized is None

    asyncio.run(scenario())


def test_command_palette_help_and_themes(tiny_handle):
    async def scenario():
        from backends.storage.config import load_config

        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle}, config=load_config())
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_loaded(pilot, app)
            await pilot.press("ctrl+p")
            await pilot.pause(0.2)
            await pilot.press(*"pick a model")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "ModelPicker")
            await pilot.press("escape")

            await pilot.press("f1")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
            await pilot.pause(0.2)
            assert app.get_key_display(Binding("ctrl+j", "")) in screen_text(app)  # as the footer shows it
            await pilot.press("escape")
            app.chat.focus()
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
            await pilot.press("escape")

            app.input.load_text("/theme textual-light")
            app.input.focus()
            await pilot.press("enter")
            await pilot.pause()
            assert app.theme == "textual-light"
            assert load_config().defaults.theme == "textual-light"  # remembered in the config file

    asyncio.run(scenario())
