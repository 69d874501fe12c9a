"""Faults of turns and branches, through the real app on real tiny models: nothing the user had is
lost, nothing runs on after nobody reads it, and no model is freed or fed IDs that are not its own."""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import threading
import time
import weakref

import pytest
from app_helpers import long_handle, one_torch_thread, screen_text, send, tiny_pair, wait_for, wait_loaded  # noqa: F401

from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model
from backends.generation.sink import TurnSink
from backends.memory import fit as fit_module
from backends.storage.store import Store
from tui.app import LlmTuiApp
from tui.messages import LoadProgress, TokensArrived
from tui.pump import pump_generation
from tui.screens.fit import FitScreen
from tui.settings import AppSettings
from tui.widgets.reply import Notice
from tui.widgets.status import StatusBar


def errors(app) -> list[str]:
    return [str(n.render()) for n in app.chat.query(Notice) if n.has_class("-error")]


def short(app, tokens: int = 8) -> None:
    app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", str(tokens))


@pytest.fixture(scope="module")
def pair_handles(tiny_pair):
    return tuple(open_model(ModelSpec(source=str(path))) for path in tiny_pair)


@pytest.fixture(scope="module")
def short_context_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with a context of 256 tokens (its config says so), for turns that do not fit."""
    out = tmp_path_factory.mktemp("short-context") / "tiny-256"
    shutil.copytree(tiny_model_dir, out)
    config = json.loads((out / "config.json").read_text())
    config["max_position_embeddings"] = 256
    (out / "config.json").write_text(json.dumps(config))
    return out


# -- a branch never destroys the reply it branches from -------------------------------------------


def test_a_branch_through_the_fit_dialog_keeps_both_replies(short_context_dir):
    handle = open_model(ModelSpec(source=str(short_context_dir)))

    async def scenario():
        app = LlmTuiApp(AppSettings(frozen=True), handles={0: handle})
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot, app)
            short(app)
            await send(pilot, app, "Say something")
            first = app.chat.last_reply()
            old_text, old_ids, message_id = first.text, [t.id for t in first.tokens], first.message_id
            assert len(old_ids) >= 3
            alternative = first.tokens[1].info.top[1]
            # Past the context now: the branch is asked about before anything runs.
            app.turns.params = app.turns.params.with_value("max_new_tokens", "250")

            app.chat.focus()
            await pilot.press("v", "l", "2")
            await wait_for(pilot, lambda: isinstance(app.screen, FitScreen))
            assert app.chat.last_reply().text == old_text  # back on screen while the dialog asks
            with Store(app.recorder.store.path) as store:
                assert store.message(message_id).content == old_text and not store.branches_of(message_id)

            await pilot.press("escape")  # no branch after all: the reply is as it was
            await wait_for(pilot, lambda: not isinstance(app.screen, FitScreen))
            await pilot.pause()
            assert app.chat.last_reply().text == old_text
            assert app.turns.conversation.messages[-1] == {"role": "assistant", "content": old_text}
            assert app.input.text == ""  # the user's question was not taken back
            with Store(app.recorder.store.path) as store:
                assert store.message(message_id).content == old_text and not store.branches_of(message_id)

            app.chat.focus()
            await pilot.press("v", "l", "2")
            await wait_for(pilot, lambda: isinstance(app.screen, FitScreen))
            await pilot.press("r")  # a shorter reply: the branch goes on from the same tokens
            await wait_for(pilot, lambda: len(app.turns_done) == 2 and app.turns.turn is None, timeout=60)
            branch = app.chat.last_reply()
            assert [t.id for t in branch.tokens[:2]] == [old_ids[0], alternative.id]
            assert branch.branch == (2, 2) and branch.message_id == message_id
            with Store(app.recorder.store.path) as store:
                assert [b.content for b in store.branches_of(message_id)] == [old_text]
                assert store.message(message_id).content == branch.text

    asyncio.run(scenario())


def test_a_branch_that_fails_before_its_first_token_puts_the_reply_back(pair_handles):
    handle = pair_handles[0]

    async def scenario():
        app = LlmTuiApp(AppSettings(frozen=True), handles={0: handle})
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot, app)
            short(app)
            await send(pilot, app, "Say something")
            first = app.chat.last_reply()
            old_text, message_id = first.text, first.message_id
            # The model's thread cannot start: the turn ends before its first token.
            real_stream = handle.stream

            def broken(*args, **kwargs):
                raise RuntimeError("no thread could be started")

            handle.stream = broken
            try:
                app.chat.focus()
                await pilot.press("v", "l", "2")
                await wait_for(pilot, lambda: app.turns.turn is None and "no branch was made" in screen_text(app))
            finally:
                handle.stream = real_stream
            assert app.chat.last_reply().text == old_text
            assert app.turns.conversation.messages[-1]["content"] == old_text
            with Store(app.recorder.store.path) as store:
                assert store.message(message_id).content == old_text and not store.branches_of(message_id)

    asyncio.run(scenario())


def test_branching_on_another_models_reply_is_refused(pair_handles, tiny_pair, tmp_path):
    db = tmp_path / "chat.sqlite3"

    async def first_app():
        app = LlmTuiApp(AppSettings(models=[str(p) for p in tiny_pair], store_path=str(db), frozen=True),
                        handles={0: pair_handles[0], 1: pair_handles[1]})
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot, app)
            short(app)
            await send(pilot, app, "Say something")
            app.models.switch_number(2)
            await wait_for(pilot, lambda: app.models.active == 1)
            app.chat.focus()
            await pilot.press("v", "l", "2")
            await pilot.pause()
            assert any("this reply came from tiny-a; switch to it to branch" in e for e in errors(app)), errors(app)
            assert len(app.turns_done) == 1 and app.turns.turn is None  # nothing ran

    async def resumed_on_the_other_model():
        app = LlmTuiApp(AppSettings(models=[str(tiny_pair[1])], store_path=str(db), resume="latest", frozen=True),
                        handles={0: pair_handles[1]})
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot, app)
            await wait_for(pilot, lambda: app.chat.last_reply() is not None)
            assert app.chat.last_reply().made_by is not None  # saved with the reply
            app.chat.focus()
            await pilot.press("v", "l", "2")
            await pilot.pause()
            assert any("this reply came from tiny-a" in e for e in errors(app))
            assert not app.turns_done

    asyncio.run(first_app())
    asyncio.run(resumed_on_the_other_model())
    with Store(db) as store:
        reply = store.load_conversation(store.latest_conversation_id()).messages[-1]
        assert not reply.branches


# -- a turn that fails keeps what it had, and stops --------------------------------------------


def test_a_failed_turn_keeps_the_characters_the_decoder_held_back(tiny_handle):
    tokenizer = tiny_handle.tokenizer
    held = tokenizer.convert_tokens_to_ids("ĠâĢ")  # a space and the first two bytes of "—"
    assert held != tokenizer.unk_token_id
    ids = [*tokenizer.encode("Hello", add_special_tokens=False), held]

    def sink() -> TurnSink:
        s = TurnSink(lambda event: None, tiny_handle.family.decode, [], threading.Event(), "cpu", [1, 2])
        s.begin()
        for i in ids:
            s.token(i)
        return s

    finished = sink().finish(ids)
    failed = sink().failed("generation failed: RuntimeError")
    assert finished.text == "Hello "  # the partial character is left out, the space is not
    assert failed.text == finished.text and failed.stop_reason == "error"


def test_an_errored_turn_keeps_its_whole_text_on_screen_and_saved(pair_handles):
    handle = pair_handles[1]
    model = handle.model
    calls = {"decode": 0}
    real_forward = model.forward

    def failing_forward(*args, **kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[-1] == 1:
            calls["decode"] += 1
            if calls["decode"] > 6:
                raise RuntimeError("device lost")
        return real_forward(*args, **kwargs)

    async def scenario():
        app = LlmTuiApp(AppSettings(frozen=True), handles={0: handle})
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot, app)
            short(app, 50)
            model.forward = failing_forward
            try:
                await send(pilot, app, "Say something long")
            finally:
                del model.forward
            done = app.turns_done[-1].done
            assert done.stop_reason == "error" and "device lost" in done.error
            reply = app.chat.last_reply()
            assert done.text and reply.text == done.text == "".join(t.text for t in reply.tokens)
            with Store(app.recorder.store.path) as store:
                assert store.message(reply.message_id).content == done.text

    asyncio.run(scenario())


def test_a_pump_that_fails_stops_the_generation(long_handle):
    generation = long_handle.stream([{"role": "user", "content": "go"}],
                                    SamplingParams(temperature=0, max_new_tokens=100_000))

    def post(message):
        if isinstance(message, TokensArrived):
            raise RuntimeError("the screen went away")

    with pytest.raises(RuntimeError, match="the screen went away"):
        pump_generation(generation, post, 1)
    generation.join(10)
    assert not generation.thread.is_alive()  # it did not run on to 100,000 tokens holding the model
    assert generation.done.stop_reason == "stopped" and generation.done.stats.new_tokens < 100_000


# -- the context is a hard limit, whatever the estimate does ------------------------------------


def test_past_the_context_is_refused_even_when_the_memory_estimate_fails(short_context_dir, monkeypatch, capsys):
    from tui.turn_check import check_turn_fits
    from backends.core.errors import LlmTuiError

    handle = open_model(ModelSpec(source=str(short_context_dir)))

    def estimate_fails(*args, **kwargs):
        raise RuntimeError("no free-memory reading")

    monkeypatch.setattr(fit_module, "check_turn", estimate_fails)
    messages = [{"role": "user", "content": "hello"}]
    over = SamplingParams(max_new_tokens=300)
    plan = fit_module.plan_turn(handle, messages, over)
    assert plan.over == "context" and "no free-memory reading" in plan.estimate_error
    with pytest.raises(LlmTuiError, match="past the model's context of 256"):
        check_turn_fits(handle, messages, over)
    within = fit_module.plan_turn(handle, messages, SamplingParams(max_new_tokens=8))
    assert within.fits and within.estimate_error  # sent, and said to be sent without the memory check
    check_turn_fits(handle, messages, SamplingParams(max_new_tokens=8))
    assert "memory not estimated" in capsys.readouterr().err

    async def scenario():
        app = LlmTuiApp(AppSettings(frozen=True), handles={0: handle})
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot, app)
            app.turns.params = app.turns.params.with_value("max_new_tokens", "300")
            app.input.load_text("hello")
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, FitScreen))
            assert app.screen.fit.over == "context" and not app.turns_done

    asyncio.run(scenario())


# -- what is sent shows from the moment it is sent ---------------------------------------------


def test_a_message_that_waited_for_its_model_shows_its_prompt_while_answered(tiny_long_model_dir, monkeypatch):
    import tui.controllers.registry as registry

    loaded = threading.Event()
    real_open = registry.open_model
    monkeypatch.setattr(registry, "open_model", lambda spec, progress=None: (loaded.wait(30), real_open(spec, progress))[1])

    async def scenario():
        app = LlmTuiApp(AppSettings(models=[str(tiny_long_model_dir)]))
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.models.loading is not None)
            short(app, 400)
            app.input.load_text("are you there?")
            await pilot.press("enter")
            await pilot.pause()
            assert app.status.info.turn == "1 message waiting"
            app.post_message(LoadProgress(0, "reading the weights", 0.5))  # the load's own line
            await wait_for(pilot, lambda: app.status.info.load.startswith("reading the weights"))
            assert "1 message waiting" in app.status.activity and "reading the weights 50%" in app.status.activity
            loaded.set()
            await wait_for(pilot, lambda: app.turns.turn is not None and app.turns.turn.reply.n_tokens > 0,
                           timeout=120)
            view = app.inspector.view
            expected = app.models.handle.render(app.turns.conversation.copy_messages())
            assert view is not None and view.ids == expected.ids  # the sent prompt, while it is answered
            await wait_for(pilot, lambda: app.turns_done and app.turns.turn is None, timeout=120)
            assert app.inspector.check.verified and app.inspector.check.view.ids == expected.ids

    asyncio.run(scenario())


def test_each_status_owner_keeps_its_own_part():
    status = StatusBar()
    status.set(turn="generating · 12 tokens")
    status.set(scoring="scoring the prompt…")
    status.set(load="loading tiny…")
    assert status.activity == "loading tiny… · generating · 12 tokens · scoring the prompt…"
    status.set(scoring="")  # the scorer is done: what the turn said stays
    status.set(load="")
    assert status.activity == "generating · 12 tokens"


# -- switching models never frees what a thread still uses ---------------------------------------


def test_unload_waits_for_the_model_to_be_let_go(tiny_model_dir):
    handle = open_model(ModelSpec(source=str(tiny_model_dir)))
    held, release = threading.Event(), threading.Event()

    def step():  # a forward call that does not end in time (a stuck kernel, a long prefill chunk)
        with handle._lock:
            held.set()
            release.wait(30)

    threading.Thread(target=step, daemon=True).start()
    held.wait(5)
    assert handle.unload(wait=0.2) is False
    assert handle.model is not None  # still in use: not freed under it
    release.set()
    deadline = time.monotonic() + 10
    while handle.model is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handle.model is None  # freed once it was let go


def test_a_switch_says_when_the_old_model_is_still_in_use(tiny_pair, monkeypatch):
    import tui.controllers.registry as registry

    monkeypatch.setattr(registry, "SWITCH_WAIT_SECONDS", 0.3)
    first = open_model(ModelSpec(source=str(tiny_pair[0])))
    held, release = threading.Event(), threading.Event()

    def step():
        with first._lock:
            held.set()
            release.wait(30)

    async def scenario():
        app = LlmTuiApp(AppSettings(models=[str(p) for p in tiny_pair]), handles={0: first})
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot, app)
            threading.Thread(target=step, daemon=True).start()
            held.wait(5)
            app.models.switch_number(2)
            await wait_for(pilot, lambda: app.models.active == 1 and app.models.loading is None, timeout=60)
            said = [n.message for n in app._notifications]
            assert any("is still in use by a step that did not stop" in m for m in said)
            assert first.model is not None
            release.set()
            await wait_for(pilot, lambda: first.model is None, timeout=10)

    asyncio.run(scenario())


def test_switching_between_loaded_models_freezes_nothing_more(tiny_pair):
    class Cycle:
        pass

    async def scenario():
        app = LlmTuiApp(AppSettings(models=[str(p) for p in tiny_pair], keep_loaded=True))
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_loaded(pilot, app, timeout=120)
            garbage = Cycle()
            garbage.me = garbage  # unreachable once dropped: only the cyclic collector frees it
            gone = weakref.ref(garbage)
            del garbage
            app.models.switch_number(2)  # a load: the heap is frozen after a collection
            await wait_for(pilot, lambda: app.models.active == 1 and app.models.loading is None, timeout=120)
            gc.collect()
            assert gone() is None  # collected, not frozen for good with the new model
            frozen = gc.get_freeze_count()
            for number in (1, 2, 1, 2):
                app.models.switch_number(number)
                await wait_for(pilot, lambda: app.models.active == number - 1)
            assert gc.get_freeze_count() <= frozen

    asyncio.run(scenario())
