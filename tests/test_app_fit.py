"""A turn that would not fit in memory: the app offers the family's truncation, sending anyway, or cancelling.

The model is a tiny real one loaded with a --max-memory cap just above its
weights, so the memory check (weights + KV cache + working memory against the
cap) refuses a long conversation for real.
"""

from __future__ import annotations

import asyncio

import pytest
from app_helpers import command, screen_text, wait_for, wait_loaded  # noqa: F401

from backends.core.spec import ModelSpec
from backends.memory.turn import turn_needs
from backends.memory.weights import weights_on
from tui.app import LlmTuiApp
from tui.screens.fit import FitScreen
from tui.settings import AppSettings
from tui.widgets.reply import Reply, UserMessage

LAST = "and what about the last question?"


@pytest.fixture(scope="module")
def capped_handle(tiny_model_dir):
    """The tiny model allowed about 150 tokens of turn beyond its weights."""
    from backends.generation.open import open_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLM_TUI_MEMORY_CHECK", "warn")  # the load check budgets a 2k context
        plain = open_model(ModelSpec(source=str(tiny_model_dir)))
        cap = weights_on(plain.model, "cpu") + turn_needs(plain, 150, 16)
        return open_model(ModelSpec(source=str(tiny_model_dir), max_memory=f"cpu={cap}"))


async def start(pilot, app, rounds: int = 6) -> None:
    """A conversation long enough not to fit, then the last question sent with Enter."""
    await wait_loaded(pilot, app)
    app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", "16")
    for n in range(rounds):
        question, answer = f"question {n} " + "word " * 20, f"answer {n} " + "text " * 30
        app.turns.conversation.add_user(question)
        app.chat.add_user(question)
        app.turns.record("user", question)
        app.turns.conversation.add_assistant(answer)
        await app.chat.add_reply("tiny", answer, status="complete")
        app.turns.record("assistant", answer, status="complete", model="tiny")
    app.input.focus()
    app.input.load_text(LAST)
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, FitScreen))
    await pilot.pause()


def test_truncate_keeps_prompts_within_what_fits(capped_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: capped_handle})
        async with app.run_test(size=(120, 40)) as pilot:
            await start(pilot, app)
            fit = app.screen.fit
            text = screen_text(app)
            assert "This turn may not fit in memory" in text and "under --max-memory" in text
            assert f"within {fit.budget:,} tokens" in text and "leaving out the oldest" in text
            assert app.turns.turn is None and not app.chat.query(Reply).last().text.startswith("question")
            await pilot.press("t")
            await wait_for(pilot, lambda: len(app.turns_done) == 1 and app.turns.turn is None)
            await pilot.pause()
            assert app.turns.params.max_prompt_tokens == fit.budget
            done = app.turns_done[-1].done
            assert done.stats.prompt_tokens <= fit.budget
            view = app.inspector.view
            assert view.dropped and done.captured_ids == view.ids  # what was sent is what the inspector shows
            assert app.inspector.verdict is True
            assert app.turns.conversation.messages[-1]["role"] == "assistant"
            assert len(app.turns.conversation.messages) == 2 * 6 + 2  # nothing was removed from the conversation
            text = screen_text(app)
            assert f"budget {fit.budget:,}" in text  # the status bar
            assert f"✂ {len(view.dropped)} messages dropped ({view.dropped_tokens} tokens) by the prompt bud" in text
            stored = app.recorder.store.load_conversation(app.recorder.conversation_id)
            assert stored.params["max_prompt_tokens"] == fit.budget
            # The next turn fits too: no question asked.
            app.input.load_text("one more")
            await pilot.press("enter")
            await wait_for(pilot, lambda: len(app.turns_done) == 2 and app.turns.turn is None)
            assert not isinstance(app.screen, FitScreen)

    asyncio.run(scenario())


def test_cancel_puts_the_message_back(capped_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: capped_handle})
        async with app.run_test(size=(100, 32)) as pilot:
            await start(pilot, app)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, FitScreen))
            await wait_for(pilot, lambda: app.input.text == LAST)
            assert app.turns.conversation.messages[-1]["role"] == "assistant"  # the question was taken back
            assert not app.turns_done and app.turns.turn is None
            assert app.turns.params.max_prompt_tokens is None
            stored = app.recorder.store.load_conversation(app.recorder.conversation_id).messages
            assert len(stored) == 12 and all(LAST not in m.content for m in stored)
            assert len(app.chat.query(UserMessage)) == 6

    asyncio.run(scenario())


def test_send_anyway_sends_the_whole_conversation(capped_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: capped_handle})
        async with app.run_test(size=(100, 32)) as pilot:
            await start(pilot, app)
            full = capped_handle.render(app.turns.conversation.copy_messages(), max_new_tokens=16)
            await pilot.press("s")
            await wait_for(pilot, lambda: len(app.turns_done) == 1 and app.turns.turn is None)
            assert app.turns_done[-1].done.stats.prompt_tokens == len(full.ids)
            assert not app.inspector.view.dropped and app.turns.params.max_prompt_tokens is None

    asyncio.run(scenario())


def test_budget_command_sets_shows_and_removes_the_limit(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_loaded(pilot, app)
            for n in range(4):
                app.turns.conversation.add_user(f"question {n} " + "word " * 20)
                app.turns.conversation.add_assistant(f"answer {n} " + "text " * 30)
            await command(pilot, app, "/budget 100")
            assert app.turns.params.max_prompt_tokens == 100
            app.input.load_text("draft question")
            await wait_for(pilot, lambda: app.inspector.view is not None and app.inspector.view.dropped)
            assert len(app.inspector.view.ids) <= 100
            assert "budget 100" in screen_text(app)
            await command(pilot, app, "/budget")
            assert "prompt budget: 100 tokens" in screen_text(app)
            app.input.load_text("")
            await command(pilot, app, "/budget off")
            assert app.turns.params.max_prompt_tokens is None
            app.input.load_text("draft question")
            await wait_for(pilot, lambda: app.inspector.view is not None and not app.inspector.view.dropped)
            await command(pilot, app, "/budget lots")
            assert "not a valid max_prompt_tokens" in screen_text(app)

    asyncio.run(scenario())
