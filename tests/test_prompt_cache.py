"""The prompt cache: a turn reads only what follows the prefix its prompt shares with the last one,
on real models, with the prompt still checked ID for ID and the output unchanged."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import psutil
import pytest
from app_helpers import one_torch_thread, screen_text, send, tiny_pair, wait_for, wait_loaded  # noqa: F401
from conftest import ROOT, build_tiny_model
from server_stubs import ShapeServer

from backends.core.params import SamplingParams
from backends.core.sequences import common_prefix
from backends.core.spec import ModelSpec
from backends.generation.open import open_model
from tui.app import LlmTuiApp
from tui.settings import AppSettings

GREEDY = SamplingParams(temperature=0, max_new_tokens=12)
NOTES = ["Here is a note about rivers: they carry water from hills to the sea. " * 2,
         "A second note, on mountains, which are high and often cold. " * 2,
         "Third: forests hold many trees, and animals live in them. " * 2,
         "Fourth, deserts: dry, hot by day, cold at night. " * 2,
         "Last: what did the notes talk about?"]


def turn(handle, messages, params=GREEDY):
    generation = handle.stream(messages, params)
    ids = [e.id for e in generation if hasattr(e, "id") and e.id is not None]
    return generation.done, ids


def conversation(handle, params=GREEDY) -> list[tuple]:
    """Five turns, each answered and carried on; (done, new IDs) per turn."""
    messages, out = [], []
    for note in NOTES:
        messages.append({"role": "user", "content": note})
        done, ids = turn(handle, messages, params)
        out.append((done, ids))
        messages.append({"role": "assistant", "content": done.text})
    return out


@pytest.fixture(scope="module")
def cached_and_plain(tiny_model_dir):
    return (open_model(ModelSpec(source=str(tiny_model_dir))),
            open_model(ModelSpec(source=str(tiny_model_dir), prompt_cache=False)))


@pytest.mark.parametrize("engine", ["generate", "loop"])
def test_greedy_with_the_cache_equals_greedy_without_it(tiny_model_dir, engine):
    cached = open_model(ModelSpec(source=str(tiny_model_dir), engine=engine))
    plain = open_model(ModelSpec(source=str(tiny_model_dir), engine=engine, prompt_cache=False))
    with_cache, without = conversation(cached), conversation(plain)
    assert [ids for _, ids in with_cache] == [ids for _, ids in without]
    assert with_cache[0][0].stats.cached_tokens == 0
    for done, _ in with_cache[1:]:
        assert done.stats.cached_tokens > 0 and done.captured_ids == done.prompt_ids  # checked ID for ID
    for done, _ in without:
        assert done.stats.cached_tokens == 0 and "off" in done.cache_note
    # The reuse is what the two prompts share: the last prompt and reply, up to where they differ.
    previous, now = with_cache[3][0], with_cache[4][0]
    held = previous.prompt_ids + with_cache[3][1][:-1]
    assert now.stats.cached_tokens == min(common_prefix(held, now.prompt_ids), len(now.prompt_ids) - 1)


@pytest.mark.slow
def test_the_default_model_answers_the_same_with_the_cache(demo_dir):
    cached = open_model(ModelSpec(engine="generate"))
    plain = open_model(ModelSpec(engine="generate", prompt_cache=False))
    params = SamplingParams(temperature=0, max_new_tokens=8)
    with_cache, without = conversation(cached, params), conversation(plain, params)
    assert [ids for _, ids in with_cache] == [ids for _, ids in without]
    assert all(done.stats.cached_tokens > 0 and done.captured_ids == done.prompt_ids for done, _ in with_cache[1:])
    cached.unload()
    plain.unload()


def test_an_edit_in_the_middle_reads_again_from_the_change(cached_and_plain):
    handle, _ = cached_and_plain
    handle.release_cache()
    messages = [{"role": "user", "content": NOTES[0]}, {"role": "assistant", "content": "Noted."},
                {"role": "user", "content": NOTES[1]}, {"role": "assistant", "content": "Noted too."},
                {"role": "user", "content": NOTES[4]}]
    first, _ = turn(handle, messages)
    edited = [dict(m) for m in messages]
    edited[2]["content"] = NOTES[2]  # the second note replaced: everything from it on is read again
    done, _ = turn(handle, edited)
    changed_at = common_prefix(first.prompt_ids, done.prompt_ids)
    assert 0 < changed_at < len(first.prompt_ids)
    assert done.stats.cached_tokens == changed_at
    assert done.captured_ids == done.prompt_ids
    with_system = [{"role": "system", "content": "Be brief."}, *edited]  # a new system prompt: from the start
    done, _ = turn(handle, with_system)
    assert done.stats.cached_tokens == common_prefix(handle.render(edited).ids, handle.render(with_system).ids)
    assert done.captured_ids == done.prompt_ids


def test_a_regeneration_reads_only_the_last_token(cached_and_plain):
    handle, _ = cached_and_plain
    handle.release_cache()
    messages = [{"role": "user", "content": NOTES[0]}]
    first, _ = turn(handle, messages)
    again, _ = turn(handle, messages)
    assert again.stats.cached_tokens == len(first.prompt_ids) - 1 and again.captured_ids == again.prompt_ids


def test_a_stopped_prefill_keeps_what_it_read(tiny_model_dir):
    handle = open_model(ModelSpec(source=str(tiny_model_dir)))
    messages = [{"role": "user", "content": "word " * 3000}]
    generation = handle.stream(messages, GREEDY)
    for _ in generation:
        pass
    handle.release_cache()
    generation = handle.stream(messages, GREEDY)
    generation.stop()  # at once: before or during the prefill
    for _ in generation:
        pass
    kept = handle.prompt_cache.tokens
    done, _ = turn(handle, messages)
    assert done.stats.cached_tokens == min(kept, len(done.prompt_ids) - 1)
    assert done.captured_ids == done.prompt_ids


def test_releasing_the_cache_gives_its_memory_back(demo_dir, tmp_path):
    # Wide enough that a long prompt's cache is tens of MiB: 4 KiB per token.
    path = build_tiny_model(demo_dir, tmp_path / "wide", layers=2, hidden=512)
    handle = open_model(ModelSpec(source=str(path)))
    turn(handle, [{"role": "user", "content": "word " * 6000}], SamplingParams(temperature=0, max_new_tokens=2))
    kept = handle.prompt_cache.nbytes
    assert kept > 20 * 2**20 and handle.prompt_cache.tokens > 6000
    before = psutil.Process().memory_info().rss
    assert handle.release_cache() == kept
    after = psutil.Process().memory_info().rss
    assert handle.prompt_cache.tokens == 0 and handle.prompt_cache.nbytes == 0
    assert before - after > kept // 2  # the process really gave it back


# -- in the app -----------------------------------------------------------------------------------


def test_the_app_reuses_the_cache_for_turns_and_branches_and_releases_it(tiny_pair):
    async def scenario():
        app = LlmTuiApp(AppSettings(models=[str(p) for p in tiny_pair], frozen=True))
        async with app.run_test(size=(140, 44)) as pilot:
            await wait_loaded(pilot, app, timeout=120)
            app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", "8")
            await send(pilot, app, NOTES[0])
            await send(pilot, app, NOTES[1])
            done = app.turns_done[-1].done
            cached = done.stats.cached_tokens
            assert cached > 0 and app.inspector.check.verified
            total = len(done.prompt_ids)
            text = screen_text(app)
            assert f"↺ {total:,} tokens: {cached:,} from the cache, {total - cached:,} read now" in text
            kept = app.models.handle.prompt_cache
            assert app.meter.kept == (kept.tokens, kept.nbytes) and "KV kept" in text

            # A branch from the reply's third token reads only what follows the common prefix.
            reply = app.chat.last_reply()
            app.chat.focus()
            await pilot.press("v", "l", "l", "2")
            await wait_for(pilot, lambda: len(app.turns_done) == 3 and app.turns.turn is None, timeout=60)
            branch = app.turns_done[-1].done
            assert branch.stats.cached_tokens == total + 2  # the prompt and the two tokens kept
            assert branch.captured_ids == branch.prompt_ids and reply is not app.chat.last_reply()

            await pilot.press("ctrl+l")  # /clear: the cache goes with the conversation
            await pilot.pause()
            assert app.models.handle.prompt_cache.tokens == 0 and app.meter.kept == (0, 0)
            await send(pilot, app, NOTES[2])
            first = app.models.handle
            assert first.prompt_cache.tokens > 0
            app.models.switch_number(2)
            await wait_for(pilot, lambda: app.models.active == 1 and app.models.loading is None, timeout=120)
            assert first.prompt_cache is None or first.prompt_cache.tokens == 0

    asyncio.run(scenario())


# -- servers say what they reused ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vllm", "llama.cpp"])
def test_a_server_reports_what_its_prefix_cache_reused(demo_tokenizer, kind):
    with ShapeServer(demo_tokenizer, kind) as server:
        handle = open_model(ModelSpec(source=server.url))
        messages = [{"role": "user", "content": NOTES[0]}]
        first, _ = turn(handle, messages)
        messages += [{"role": "assistant", "content": first.text}, {"role": "user", "content": NOTES[1]}]
        second, _ = turn(handle, messages)
        assert first.stats.cached_tokens == 0
        assert second.stats.cached_tokens == server.last_shared > 0  # what the server said, no more


def test_run_json_says_how_many_tokens_came_from_the_cache(tiny_model_dir):
    result = subprocess.run([sys.executable, "-m", "tui.cli", "run", str(tiny_model_dir), "-p", "hi", "--json",
                             "--max-new-tokens", "3", "--temperature", "0"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["type"] == "done" and done["cached_tokens"] == 0 and done["stats"]["cached_tokens"] == 0
    off = subprocess.run([sys.executable, "-m", "tui.cli", "run", str(tiny_model_dir), "-p", "hi", "--json",
                          "--max-new-tokens", "3", "--prompt-cache", "off"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout.splitlines()[-1])["cached_tokens"] == 0


def test_a_turn_after_scoring_its_prompt_reads_only_its_last_token(cached_and_plain):
    handle, _ = cached_and_plain
    handle.release_cache()
    messages = [{"role": "user", "content": NOTES[1]}]
    view = handle.render(messages)
    score = handle.score(view.ids)
    assert len(score.logprobs) == len(view.ids)
    done, _ = turn(handle, messages)
    assert done.stats.cached_tokens == len(view.ids) - 1 and done.captured_ids == view.ids
