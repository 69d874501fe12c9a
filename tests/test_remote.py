"""Models served elsewhere: a real ``transformers serve`` on loopback, and vLLM- and
llama-server-shaped servers for what only those engines do (prompt IDs in and echoed,
their own prompt rendering, their metrics)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from app_helpers import screen_text, send, wait_loaded  # noqa: F401
from server_stubs import REPLY, ShapeServer, transformers_serve

from backends.core.errors import UsageError
from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model
from backends.prompt.check import PromptCheck
from backends.server.client import ServerClient
from backends.server.metrics import metrics_line, read_metrics
from backends.server.prompt import LlamaServerPrompt, VllmPrompt, readable_piece
from tui.app import LlmTuiApp
from tui.settings import AppSettings

ROOT = Path(__file__).resolve().parent.parent
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = SamplingParams(temperature=0, max_new_tokens=16)


@pytest.fixture(scope="module")
def served(demo_dir, tmp_path_factory):
    """``transformers serve`` with the default model, for the whole module."""
    pytest.importorskip("fastapi", reason="transformers serve needs 'transformers[serving]' (the dev extras)")
    process, url = transformers_serve(demo_dir, tmp_path_factory.mktemp("serve") / "serve.log")
    yield url
    process.terminate()
    process.wait(20)


def collect(generation):
    events = list(generation)
    return events[:-1], events[-1]


# -- what the servers that take token IDs can tell --------------------------------------------


def test_vllm_renders_the_prompt_and_reads_the_previewed_ids(demo_tokenizer):
    with ShapeServer(demo_tokenizer, "vllm") as server:
        handle = open_model(ModelSpec(source=server.url))
        assert isinstance(handle.family, VllmPrompt) and handle.runner.sends_ids
        assert handle.info.device == "vllm server" and handle.info.max_context == 8192
        view = handle.render(QUESTION)
        expected = demo_tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
        assert view.text == expected and view.ids == demo_tokenizer(expected, add_special_tokens=False)["input_ids"]
        assert "".join(view.pieces) == view.text  # the server's token strings, made readable
        assert view.special[view.pieces.index("<|im_start|>")]
        events, done = collect(handle.stream(QUESTION, GREEDY))
        path, body = server.posts[-1]
        assert path == "/v1/completions" and body["prompt"] == view.ids and body["return_token_ids"] is True
        assert done.text == REPLY and done.stop_reason == "eos"
        assert done.prompt_check == "ids" and done.captured_ids == view.ids  # echoed by the server
        assert [e.id for e in events] == demo_tokenizer(REPLY, add_special_tokens=False)["input_ids"]
        assert PromptCheck.of(view, done.captured_ids, done.prompt_count, level=done.prompt_check).verified


def test_an_echo_that_differs_is_shown_as_a_difference(demo_tokenizer):
    with ShapeServer(demo_tokenizer, "vllm", echo_extra=[0]) as server:  # the engine read a token more
        handle = open_model(ModelSpec(source=server.url))
        view = handle.render(QUESTION)
        _, done = collect(handle.stream(QUESTION, GREEDY))
        check = PromptCheck.of(view, done.captured_ids, done.prompt_count, level=done.prompt_check)
        assert check.level == "ids" and check.mismatch == 0 and check.verified is False


def test_llama_server_applies_its_template_and_takes_ids(demo_tokenizer):
    with ShapeServer(demo_tokenizer, "llama.cpp") as server:
        handle = open_model(ModelSpec(source=server.url))
        assert isinstance(handle.family, LlamaServerPrompt) and handle.runner.sends_ids
        view = handle.render(QUESTION)
        assert view.text.endswith("<|im_start|>assistant\n") and len(view.ids) == len(view.pieces) > 10
        _, done = collect(handle.stream(QUESTION, GREEDY))
        assert server.posts[-1][1]["prompt"] == view.ids and "return_token_ids" not in server.posts[-1][1]
        assert done.prompt_check == "ids" and done.captured_ids == view.ids  # sent as IDs: read as they are
        assert done.text == REPLY


def test_a_local_tokenizer_previews_and_the_ids_go_to_the_server(demo_tokenizer, demo_dir):
    with ShapeServer(demo_tokenizer, "vllm") as server:
        handle = open_model(ModelSpec(source=server.url, tokenizer=str(demo_dir)))
        assert handle.family.name == "smollm"  # the local family, not the server's rendering
        view = handle.render(QUESTION)
        _, done = collect(handle.stream(QUESTION, GREEDY))
        assert server.posts[-1][1]["prompt"] == view.ids and done.captured_ids == view.ids


def test_server_metrics_are_read_as_each_engine_names_them(demo_tokenizer):
    with ShapeServer(demo_tokenizer, "vllm") as vllm, ShapeServer(demo_tokenizer, "llama.cpp") as llama:
        figures = read_metrics(ServerClient(vllm.url))
        assert (figures.kv_usage, figures.running, figures.waiting, figures.prefix_hit_rate) == (0.25, 2, 1, 0.25)
        assert metrics_line(figures) == "KV cache 25% · 2 running · 1 waiting · prefix hits 25%"
        other = read_metrics(ServerClient(llama.url))
        assert (other.kv_usage, other.running, other.waiting) == (0.5, 1, 0)


def test_stop_closes_the_stream_and_the_server_cancels(demo_tokenizer):
    with ShapeServer(demo_tokenizer, "vllm", slow_first_token=20) as server:
        handle = open_model(ModelSpec(source=server.url))
        stop = threading.Event()
        generation = handle.stream(QUESTION, GREEDY, stop)
        time.sleep(0.3)
        started = time.monotonic()
        stop.set()
        _, done = collect(generation)
        assert done.stop_reason == "stopped" and time.monotonic() - started < 1.0
        assert server.cancelled.wait(5)


def test_a_server_of_several_models_needs_model_and_the_key_stays_in_the_environment(demo_tokenizer, monkeypatch):
    with ShapeServer(demo_tokenizer, "vllm") as server:
        server.extra_models = ["other/model"]
        with pytest.raises(UsageError, match="serves 2 models: demo/SmolLM2-135M-Instruct, other/model"):
            open_model(ModelSpec(source=server.url))
        with pytest.raises(UsageError, match="does not serve 'nope'"):
            open_model(ModelSpec(source=server.url, server_model="nope"))
        spec = ModelSpec(source=server.url, server_model="demo/SmolLM2-135M-Instruct", api_key_env="STUB_KEY")
        with pytest.raises(UsageError, match="STUB_KEY"):
            open_model(spec)
        monkeypatch.setenv("STUB_KEY", "sk-test-123")
        open_model(spec)
        assert server.authorizations[-1] == "Bearer sk-test-123"
        assert "sk-test-123" not in json.dumps(spec.to_json())


def test_a_servers_logprobs_take_the_same_shape(demo_tokenizer):
    for kind in ("vllm", "llama.cpp"):
        with ShapeServer(demo_tokenizer, kind) as server:
            handle = open_model(ModelSpec(source=server.url))
            events = list(handle.stream(QUESTION, SamplingParams(temperature=0, max_new_tokens=4, top_logprobs=2)))
            info = events[0].info
            assert server.posts[-1][1]["logprobs"] == 2
            assert info.logprob == -0.25 and info.rank == 1 and info.entropy is None
            assert [(a.piece, a.logprob) for a in info.top] == [(events[0].text, -0.25), ("X", -1.75)]
            assert info.top[0].id is None  # the OpenAI API names alternatives by their text only


def test_token_strings_become_text():
    assert readable_piece("Ġthe") == " the" and readable_piece("Ċ") == "\n"
    assert readable_piece("▁the") == " the" and readable_piece("<|im_end|>") == "<|im_end|>"
    assert readable_piece("Ã©") == "é"


# -- a real server on loopback: transformers serve -------------------------------------------


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


def test_run_on_transformers_serve_checks_the_prompt_count(served, tmp_path):
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps(QUESTION))
    result = run_cli("run", served, "--messages", str(messages), "--temperature", "0", "--max-new-tokens", "16",
                     "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    done = records[-1]
    assert "Paris" in "".join(r["text"] for r in records[:-1])
    assert done["prompt_check"] == "count" and done["captured_ids"] is None
    assert done["prompt_count"] == len(done["prompt_ids"]) == done["stats"]["prompt_tokens"]
    local = run_cli("inspect", served, "--messages", str(messages), "--json")
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout)["ids"] == done["prompt_ids"]  # the preview is what run sent


def test_the_app_on_a_server_shows_the_check_it_could_make(served):
    async def scenario():
        app = LlmTuiApp(AppSettings(models=[served], frozen=True))
        async with app.run_test(size=(140, 40)) as pilot:
            await wait_loaded(pilot, app, timeout=120)
            app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", "12")
            await send(pilot, app, QUESTION[0]["content"])
            done = app.turns_done[-1].done
            assert "Paris" in done.text and done.prompt_check == "count"
            assert app.inspector.check.level == "count" and app.inspector.verdict is True
            text = screen_text(app)
            assert "count verified" in text and "transformers server" in text
            assert app.status.info.kv == ""  # the server's KV cache is not ours to project
            await pilot.press("f9")
            assert type(app.screen).__name__ == "MemoryScreen"
            await pilot.press("escape")
            app.input.load_text("/profile")
            await pilot.press("enter")
            await pilot.pause()
            assert "runs on transformers server" in screen_text(app)

    asyncio.run(scenario())
