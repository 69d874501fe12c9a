"""Compare mode in the app: /compare, a turn answered by two models side by side, their divergence
measured token by token (checked against the backend's reading of the same replies), the reply the
conversation goes on from, what is saved, and the refusals."""

from __future__ import annotations

import asyncio
import json

import pytest
from app_helpers import command, compare_ended, screen_text, wait_for

from backends.core.spec import ModelSpec
from backends.generation.compare.pairs import Reading, compare_reply
from backends.generation.open import open_model
from backends.prompt.by_message import aligned_counts
from backends.storage.store import Store
from tui.app import LlmTuiApp
from tui.settings import AppSettings
from tui.widgets.compared import ComparedTurn
from tui.widgets.reply import Notice


@pytest.fixture(scope="module")
def other_handle(demo_dir, tmp_path_factory):
    """The tiny model's architecture and tokenizer with other random weights: one vocabulary, other opinions."""
    from conftest import build_tiny_model

    return open_model(ModelSpec(source=str(build_tiny_model(demo_dir, tmp_path_factory.mktemp("cmp") / "other",
                                                            seed=1))))


def notices(app) -> list[str]:
    return [str(n.render()) for n in app.chat.query(Notice)]


async def compare_once(pilot, app, text: str = "Name a colour.") -> ComparedTurn:
    await command(pilot, app, "/set temperature 0")
    await command(pilot, app, "/set max_new_tokens 8")
    await command(pilot, app, "/compare 1 2")
    app.input.load_text(text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: compare_ended(app), 60)
    await pilot.pause()
    return app.chat.query_one(ComparedTurn)


def test_two_models_answer_side_by_side_and_their_divergence_is_the_backends(tiny_handle, other_handle, tmp_path):
    async def scenario():
        app = LlmTuiApp(AppSettings(models=["tiny", "other"]), handles={0: tiny_handle, 1: other_handle})
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: app.models.handle is not None and app.sessions.store_ready)
            turn = await compare_once(pilot, app)
            assert any("the models share cpu: they answer one after another" in n for n in notices(app))
            first, second = turn.panes
            assert first.status == second.status == "complete" and len(first.tokens) == len(second.tokens) == 8
            assert first.region.y == second.region.y and first.region.x < second.region.x  # side by side

            # The figures are the backend's reading of the reference's reply, and the other's of its own.
            prompt = tiny_handle.render(app.turns.conversation.messages[:-1]).ids
            ids = [t.id for t in first.tokens]
            (expected,) = compare_reply(Reading(tiny_handle, prompt), [Reading(other_handle, prompt, 1)], ids)
            assert turn.divergence[0]["kl"] == pytest.approx(expected.kl, abs=1e-9)
            assert turn.divergence[0]["agree"] == expected.top1_agree
            own = [t.id for t in second.tokens]
            (mirrored,) = compare_reply(Reading(other_handle, prompt), [Reading(tiny_handle, prompt, 1)], own)
            assert turn.divergence[1]["kl"] == pytest.approx(mirrored.kl, abs=1e-9)
            text = screen_text(app)
            assert f"2 vs 1: mean KL {expected.summary().mean_kl:.4f}" in text
            assert "compared: 1 tiny" in text and "2 other" in text

            # The reference's reply is kept; both are saved, the other as a branch with its figures.
            assert app.turns.conversation.messages[-1] == {"role": "assistant", "content": first.text}
            assert "kept" in str(first._stats.render()) and "kept" not in str(second._stats.render())
            with Store(app.recorder.store.path) as store:
                stored = store.load_conversation(app.recorder.conversation_id)
            (reply,) = [m for m in stored.messages if m.role == "assistant"]
            assert reply.content == first.text and reply.stats["compare"]["pane"] == 1
            assert reply.stats["compare"]["divergence"]["kl"] == turn.divergence[0]["kl"]
            (branch,) = reply.branches
            assert branch.content == second.text and branch.model == "other"
            assert branch.stats["compare"]["against_reference"]["summary"]["mean_kl"] == \
                pytest.approx(expected.summary().mean_kl)

            # The JSON export carries every reply and its figures.
            target = tmp_path / "compared.json"
            await command(pilot, app, f"/save json {target}")
            exported = json.loads(target.read_text())["messages"][1]
            assert exported["stats"]["compare"]["divergence"]["kl"] == pytest.approx(turn.divergence[0]["kl"])
            assert exported["branches"][0]["stats"]["compare"]["against_reference"]["top1_agree"] == \
                expected.top1_agree

            # d colours both panes by divergence; the token cursor sets both models' top K side by side.
            app.chat.focus()
            await pilot.press("d")
            await pilot.pause()
            assert first.token_styles is not None and second.token_styles is not None
            assert "KL from the reference" in str(app.legend.render())
            await pilot.press("v")  # the last reply: pane 2
            await pilot.pause()
            assert app.chat.cursor == (second, 0) and app.inspector.showing_output
            side = screen_text(app)
            assert "likeliest tokens" in side and "tiny" in side and "other" in side

            # Enter keeps the reply under the cursor: the conversation goes on from it, and the store agrees.
            await pilot.press("enter")
            await pilot.pause()
            assert app.turns.conversation.messages[-1] == {"role": "assistant", "content": second.text}
            assert "the conversation goes on from reply 2 (other)" in notices(app)[-1]
            with Store(app.recorder.store.path) as store:
                stored = store.load_conversation(app.recorder.conversation_id)
            (reply,) = [m for m in stored.messages if m.role == "assistant"]
            assert reply.content == second.text and reply.model == "other"
            assert [b.content for b in reply.branches] == [first.text]

            await command(pilot, app, "/compare off")
            assert app.status.info.compare == "" and not app.comparing.on

    asyncio.run(scenario())


def test_different_vocabularies_get_one_line_and_a_word_diff(tiny_handle, tinyqwen_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(models=["tiny", "qwen"]), handles={0: tiny_handle, 1: tinyqwen_handle})
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: app.models.handle is not None and app.sessions.store_ready)
            turn = await compare_once(pilot, app)
            text = screen_text(app)
            assert "2 vs 1: " in text and "vocabular" in text
            assert "2 vs 1, word by word: similarity" in text
            assert turn.divergence == {}

            # The inspector sets both prompts side by side, message by message: two templates, two vocabularies.
            messages = app.turns.conversation.copy_messages()
            views = [h.render(messages) for h in (tiny_handle, tinyqwen_handle)]
            rows = aligned_counts(views)
            assert [r.role for r in rows] == ["user", "assistant", "framing"]
            assert all(sum(r.tokens[k] for r in rows) == len(views[k].ids) for k in (0, 1))
            assert rows[0].tokens[0] != rows[0].tokens[1] or rows[2].tokens[0] != rows[2].tokens[1]
            lines = [" ".join(line.split()) for line in screen_text(app).splitlines()]
            assert any("prompts of the 2 compared models, tokens per message" in line for line in lines)
            for row in rows:
                name = row.role if row.role == "framing" else f"{row.index} {row.role}"
                assert any(f"{name} {row.tokens[0]} {row.tokens[1]}" in line for line in lines), (name, row)
            assert any(line.startswith("▏last turn ✓ ✓") or "last turn ✓ ✓" in line for line in lines)
            assert app.inspector.view.ids == views[0].ids
            app.inspector.focus()
            await pilot.press("n")  # the next model's prompt below the table
            await pilot.pause()
            assert app.inspector.view.ids == views[1].ids
            app.chat.focus()
            await pilot.press("d")
            await pilot.pause()
            assert turn.panes[0].token_styles is None

    asyncio.run(scenario())


def test_compare_refuses_what_it_cannot_do(tiny_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(models=["tiny"]), handles={0: tiny_handle})
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_for(pilot, lambda: app.models.handle is not None)
            for typed, said in (("/compare 1", "two to four different models"),
                                ("/compare 1 1", "two to four different models"),
                                ("/compare 1 7", "there is no model 7"),
                                ("/compare one two", "takes model numbers"),
                                ("/compare", "compare mode is off"),
                                ("/keep 2", "there is no compared turn")):
                await command(pilot, app, typed)
                assert said in notices(app)[-1], (typed, notices(app)[-1])
            assert not app.comparing.on

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def tinyqwen_handle(tmp_path_factory):
    from remote_standins import make_tinyqwen_dir

    return open_model(ModelSpec(source=str(make_tinyqwen_dir(tmp_path_factory.mktemp("cmp-qwen"))),
                                trust_remote_code=True))


def test_a_compared_turn_comes_back_with_resume_and_ctrl_r_compares_again(tiny_handle, other_handle):
    async def first_session():
        app = LlmTuiApp(AppSettings(models=["tiny", "other"]), handles={0: tiny_handle, 1: other_handle})
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: app.models.handle is not None and app.sessions.store_ready)
            turn = await compare_once(pilot, app)
            await command(pilot, app, "/keep 2")
            return [p.text for p in turn.panes], [p.model for p in turn.panes], turn.divergence[1]["kl"], \
                str(turn._figures.render())

    texts, models, kl, figures = asyncio.run(first_session())

    async def resumed():
        app = LlmTuiApp(AppSettings(models=["tiny", "other"], resume="latest"),
                        handles={0: tiny_handle, 1: other_handle})
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: app.sessions.store_ready and not app.sessions.loading)
            await pilot.pause()
            turn = app.chat.query_one(ComparedTurn)
            assert [p.text for p in turn.panes] == texts and [p.model for p in turn.panes] == models
            assert turn.kept == 1 and app.turns.conversation.messages[-1]["content"] == texts[1]
            assert turn.divergence[1]["kl"] == kl and str(turn._figures.render()) == figures
            assert app.turns.messages_to_save()[-1] == ("assistant", texts[1], "other")
            await command(pilot, app, "/keep 1")  # still the conversation's last turn: its replies can be kept
            assert app.turns.conversation.messages[-1]["content"] == texts[0]

            await command(pilot, app, "/compare 1 2")
            app.chat.focus()
            await pilot.press("ctrl+r")  # compare mode: every compared model answers again
            await wait_for(pilot, lambda: compare_ended(app), 60)
            await pilot.pause()
            (again,) = app.chat.query(ComparedTurn)
            assert again is not turn and [p.text for p in again.panes] == texts  # greedy: the same replies
            with Store(app.recorder.store.path) as store:
                stored = store.load_conversation(app.recorder.conversation_id)
            assert [m.role for m in stored.messages] == ["user", "assistant"]

    asyncio.run(resumed())


async def long_compared_turn(pilot, app) -> ComparedTurn:
    """Models 1 and 2 compared on a reply of up to 6,000 tokens; returns the turn once the first has a few."""
    await wait_for(pilot, lambda: app.models.handle is not None and app.sessions.store_ready)
    await command(pilot, app, "/set max_new_tokens 6000")
    await command(pilot, app, "/compare 1 2")
    app.input.load_text("go on and on")
    await pilot.press("enter")
    turn = app.chat.query_one(ComparedTurn)
    await wait_for(pilot, lambda: len(turn.panes[0].tokens) > 5)
    return turn


def test_esc_stops_a_compared_turn_and_keeps_what_was_said(tiny_handle, other_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(models=["tiny", "other"]), handles={0: tiny_handle, 1: other_handle})
        async with app.run_test(size=(160, 48)) as pilot:
            turn = await long_compared_turn(pilot, app)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.comparing.running is None, 30)
            await pilot.pause()
            first, second = turn.panes
            assert first.status == "stopped" and first.text and len(first.tokens) < 6000
            assert not second.text  # it never started: one after another, and the stop came first
            assert turn.kept == 0 and app.turns.conversation.messages[-1]["content"] == first.text
            assert "2 vs 1" not in str(turn._figures.render())  # nothing was read after a stop
            app.input.load_text("and now?")  # the gate is open again
            await pilot.press("enter")
            await wait_for(pilot, lambda: len(app.chat.query(ComparedTurn)) == 2)

    asyncio.run(scenario())


def test_c_in_the_model_picker_compares_that_model_with_the_active_one(tiny_handle, other_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(models=["tiny", "other"]), handles={0: tiny_handle, 1: other_handle})
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: app.models.handle is not None)
            app.chat.focus()
            await pilot.press("f2")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "ModelPicker")
            await pilot.press("down", "c")  # the second row: model 2
            await wait_for(pilot, lambda: app.comparing.on)
            assert app.comparing.slots == [0, 1] and app.status.info.compare == "compare 1·2"
            assert "compare mode: each message goes to models 1" in notices(app)[-1]

    asyncio.run(scenario())


def test_compare_mode_says_compared_models_are_offered_no_tools(tiny_handle, other_handle, tmp_path):
    (tmp_path / "tools.json").write_text(json.dumps([{"name": "get_weather", "parameters": {"type": "object"}}]))

    async def scenario():
        app = LlmTuiApp(AppSettings(models=["tiny", "other"], tools_file=str(tmp_path / "tools.json")),
                        handles={0: tiny_handle, 1: other_handle})
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_for(pilot, lambda: app.models.handle is not None)
            await command(pilot, app, "/compare 1 2")
            await wait_for(pilot, lambda: app.comparing.on)
            assert "tools are not offered to compared models" in notices(app)[-1]
            await command(pilot, app, "/compare off")
            await command(pilot, app, "/tools off all")
            await command(pilot, app, "/compare 1 2")
            await wait_for(pilot, lambda: app.comparing.on)
            assert "tools are not offered" not in notices(app)[-1]

    asyncio.run(scenario())


def test_quitting_during_a_compared_turn_saves_what_the_panes_said(tiny_handle, other_handle):
    async def scenario():
        app = LlmTuiApp(AppSettings(models=["tiny", "other"]), handles={0: tiny_handle, 1: other_handle})
        async with app.run_test(size=(160, 48)) as pilot:
            turn = await long_compared_turn(pilot, app)
            store, conv_id = app.recorder.store.path, app.recorder.conversation_id
            reference = turn.labels[0]
            await app.action_quit()
            said = turn.panes[0].text
        with Store(store) as db:
            stored = db.load_conversation(conv_id)
        last = stored.messages[-1]
        assert last.role == "assistant" and last.status == "stopped" and said.startswith(last.content) and last.content
        assert last.model == reference

    asyncio.run(scenario())
