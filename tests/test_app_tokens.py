"""The output side in the real app: colouring by probability, the token cursor and the
inspector's output view, branching from an alternative, stepping between branches,
and scoring the prompt — with the embedded default model answering."""

from __future__ import annotations

import json

import pytest
from app_helpers import command, screen_text, send, wait_for, wait_loaded

from backends.storage.store import Store
from tui.app import LlmTuiApp
from tui.settings import AppSettings
from tui.widgets.reply import Notice

pytestmark = pytest.mark.anyio
QUESTION = "What is the capital of France?"


def app_for(handle) -> LlmTuiApp:
    return LlmTuiApp(AppSettings(frozen=True), handles={0: handle})


async def answered(pilot, app) -> None:
    await wait_loaded(pilot, app)
    app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", "10")
    await send(pilot, app, QUESTION)


async def test_colour_cursor_and_output_view(demo_handle):
    app = app_for(demo_handle)
    async with app.run_test(size=(140, 40)) as pilot:
        await answered(pilot, app)
        reply = app.chat.last_reply()
        assert len(reply.tokens) >= 5 and all(t.info is not None for t in reply.tokens)
        assert "".join(t.text for t in reply.tokens) == reply.text  # the tokens are the reply

        app.chat.focus()
        assert not app.legend.display  # colouring is off by default
        await pilot.press("t")
        await pilot.pause()
        assert app.legend.display and "token probability" in screen_text(app)

        await pilot.press("v", "l", "l")
        await pilot.pause()
        assert app.chat.cursor == (reply, 2) and app.inspector.showing_output
        third = reply.tokens[2]
        text = screen_text(app)
        assert f"token 3 of {len(reply.tokens)}" in text and f"id {third.id}" in text
        assert f"rank {third.info.rank}" in text and "entropy" in text
        assert third.info.top[1].piece.strip() in text  # the alternatives are listed

        await pilot.press("w")  # to the next word's first token
        await pilot.pause()
        assert app.chat.cursor[1] > 2 and reply.tokens[app.chat.cursor[1]].text[:1].isspace()
        await pilot.press("escape")
        await pilot.pause()
        assert app.chat.cursor is None and not app.inspector.showing_output
        await pilot.press("t")
        await pilot.pause()
        assert not app.legend.display


async def test_an_alternative_branches_and_brackets_step_between_branches(demo_handle):
    app = app_for(demo_handle)
    async with app.run_test(size=(140, 40)) as pilot:
        await answered(pilot, app)
        first = app.chat.last_reply()
        old_ids = [t.id for t in first.tokens]
        old_text = first.text
        alternative = first.tokens[2].info.top[1]

        app.chat.focus()
        await pilot.press("v", "l", "l", "2")
        await wait_for(pilot, lambda: len(app.turns_done) == 2 and app.turns.turn is None, timeout=120)
        branch = app.chat.last_reply()
        assert [t.id for t in branch.tokens[:3]] == [*old_ids[:2], alternative.id]
        assert branch.branch == (2, 2) and branch.text != old_text
        check = app.inspector._check
        assert check is not None and check.view.ids[-3:] == [*old_ids[:2], alternative.id]
        assert check.level == "ids" and check.verified  # the continued prompt is what the model received

        conv_id = app.recorder.conversation_id
        message_id = branch.message_id
        with Store(app.recorder.store.path) as store:
            kept = store.branches_of(message_id)
            assert [b.content for b in kept] == [old_text]
            assert [t.id for t in kept[0].tokens] == old_ids

        app.chat.focus()
        await pilot.press("v", "left_square_bracket")
        await pilot.pause(0.2)
        assert app.chat.last_reply().text == old_text and app.chat.last_reply().branch == (1, 2)
        assert app.turns.conversation.messages[-1]["content"] == old_text  # the next turn goes on from it
        with Store(app.recorder.store.path) as store:
            assert store.message(message_id).content == old_text
            exported = json.loads(json.dumps(store.load_conversation(conv_id).messages[-1].to_json()))
        assert exported["content"] == old_text and len(exported["branches"]) == 1
        assert exported["tokens"][2]["top"][0]["id"] == old_ids[2]


async def test_only_the_last_reply_branches(demo_handle):
    app = app_for(demo_handle)
    async with app.run_test(size=(140, 40)) as pilot:
        await answered(pilot, app)
        await send(pilot, app, "And of Italy?")
        app.chat.focus()
        await pilot.press("v", "k", "1")  # the earlier reply
        await pilot.pause()
        errors = [n for n in app.chat.query(Notice) if n.has_class("-error")]
        assert errors and "only the last reply branches" in str(errors[-1].render())
        assert len(app.turns_done) == 2  # nothing was generated


async def test_the_inspector_scores_the_prompt(demo_handle):
    app = app_for(demo_handle)
    async with app.run_test(size=(140, 40)) as pilot:
        await answered(pilot, app)
        app.inspector.focus()
        await pilot.press("s")
        await wait_for(pilot, lambda: app.inspector.score is not None, timeout=60)
        score = app.inspector.score
        assert len(score.logprobs) == len(app.inspector._view.ids) and score.logprobs[0] is None
        text = screen_text(app)
        assert "mean logprob" in text
        await command(pilot, app, "/new")


async def test_a_narrow_terminal_shows_the_token_under_the_line(demo_handle):
    """At 80 columns the inspector is out of sight: the line under the chat carries the token."""
    app = app_for(demo_handle)
    async with app.run_test(size=(80, 24)) as pilot:
        await answered(pilot, app)
        reply = app.chat.last_reply()
        app.chat.focus()
        await pilot.press("v", "l")
        await pilot.pause()
        second = reply.tokens[1]
        line = [row for row in screen_text(app).splitlines() if f"2/{len(reply.tokens)}" in row]
        assert line and f"id {second.id}" in line[0] and "F7: all" in line[0]
        await pilot.press("escape")
        await pilot.pause()
        assert not app.legend.display  # colouring is off: the line goes with the cursor
