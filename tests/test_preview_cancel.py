"""A prompt render nobody wants any more stops early: between truncation tries, inside the chat
template family, through ``ModelHandle.render``, and in the app while the user types."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from app_helpers import wait_for, wait_loaded

from backends.core.spec import ModelSpec
from backends.prompt.cancel import RenderCancelled
from backends.prompt.family_for import open_family
from backends.prompt.truncation import render_within
from tui.app import LlmTuiApp
from tui.settings import AppSettings


def conversation(rounds: int, last: str = "and the last question?") -> list[dict]:
    messages = []
    for n in range(rounds):
        messages += [{"role": "user", "content": f"question {n}: " + "tell me about the weather in Paris " * 4},
                     {"role": "assistant", "content": f"answer {n}: " + "it is sunny and warm today " * 4}]
    messages.append({"role": "user", "content": last})
    return messages


@pytest.fixture
def template_family(demo_dir):
    """The default model's chat template family (its real tokenizer), fresh: renders are counted on it."""
    family, _ = open_family(ModelSpec(source=str(demo_dir)))
    return family


def count_renders(family, after=None) -> list[int]:
    """Count ``family.render`` calls that return; ``after(n)`` runs once the n-th has returned."""
    calls = []
    render = family.render

    def counted(*args, **kwargs):
        view = render(*args, **kwargs)
        calls.append(len(view.ids))
        if after is not None:
            after(len(calls))
        return view

    family.render = counted
    return calls


def test_a_cancelled_budget_render_stops_between_tries(template_family):
    messages = conversation(40)
    full = count_renders(template_family)
    view = render_within(template_family, messages, 300, cancel=threading.Event())
    assert len(view.ids) <= 300 and view.dropped  # an event that is never set changes nothing
    assert len(full) >= 5  # one whole render, then a search for the cut: a render per try

    del template_family.render
    cancel = threading.Event()
    stopped = count_renders(template_family, after=lambda n: cancel.set() if n == 2 else None)
    with pytest.raises(RenderCancelled):
        render_within(template_family, messages, 300, cancel=cancel)
    assert len(stopped) == 2  # cancelled after the second render: no third one started


def test_a_cancelled_render_stops_inside_the_template_family(template_family):
    messages = conversation(300)
    started = time.perf_counter()
    template_family.render(messages)
    whole = time.perf_counter() - started
    assert whole > 0.3  # long enough for a stop part way to show (it renders every prefix)

    cancel = threading.Event()
    threading.Timer(0.02, cancel.set).start()
    started = time.perf_counter()
    with pytest.raises(RenderCancelled):
        render_within(template_family, messages[:-1] + [{"role": "user", "content": "changed"}], None,
                      cancel=cancel)
    assert time.perf_counter() - started < whole / 3


def test_the_handle_passes_the_event_to_the_render(tiny_handle):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RenderCancelled):
        tiny_handle.render([{"role": "user", "content": "hi"}], cancel=cancel)
    # The event belongs to that render only: the next one, without it, runs.
    assert tiny_handle.render([{"role": "user", "content": "hi"}]).ids


DRAFTS = ("a", "ab", "abc", "abcd")


def test_typing_fast_leaves_only_the_newest_preview(tiny_handle):
    """Each key starts a preview of a long conversation cut to a budget; a newer one stops the
    one before it part way, and only the newest is shown."""
    started: list[str] = []
    outcomes: list[tuple[str, str]] = []
    shown: list[str] = []
    newer = {draft: threading.Event() for draft in DRAFTS}
    render = tiny_handle.render

    def watched(messages, **kwargs):
        draft = messages[-1]["content"]
        if draft in DRAFTS:
            started.append(draft)
            at = DRAFTS.index(draft)
            if at:
                newer[DRAFTS[at - 1]].set()
            if draft != DRAFTS[-1]:
                # Go on once the next draft's preview is under way. A render holds the GIL, which
                # slows the event loop to a crawl: how far a render got when the next key arrives
                # is chance, so the test makes "still rendering when superseded" certain.
                newer[draft].wait(30)
        try:
            view = render(messages, **kwargs)
        except RenderCancelled:
            outcomes.append((draft, "stopped"))
            raise
        outcomes.append((draft, "finished"))
        return view

    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: tiny_handle})
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_loaded(pilot, app)
            show = app.inspector.show_preview

            def showing(view, error=None):  # what reaches the screen, in order
                if view is not None:
                    shown.append(view.messages[-1]["content"])
                show(view, error)

            app.inspector.show_preview = showing
            for message in conversation(100)[:-1]:
                if message["role"] == "user":
                    app.turns.conversation.add_user(message["content"])
                else:
                    app.turns.conversation.add_assistant(message["content"])
            app.turns.params = app.turns.params.with_value("max_prompt_tokens", "200")
            app.input.focus()
            for typed in DRAFTS:
                await pilot.press(typed[-1])
                await wait_for(pilot, lambda: typed in started, timeout=30)
            await wait_for(pilot, lambda: len(outcomes) == len(DRAFTS), timeout=60)
            await wait_for(pilot, lambda: shown, timeout=10)
            await pilot.pause(0.2)
            view = app.inspector.view
            assert view is not None and view.messages[-1]["content"] == "abcd" and len(view.ids) <= 200
            assert app.inspector.error is None  # a stopped render is not an error to show

    tiny_handle.render = watched
    try:
        asyncio.run(scenario())
    finally:
        del tiny_handle.render
    assert sorted(outcomes) == [("a", "stopped"), ("ab", "stopped"), ("abc", "stopped"), ("abcd", "finished")]
    assert shown == ["abcd"]
