"""What goes wrong with a server, each met with one line and nothing lost: a URL that does not
answer, a server that is not OpenAI-compatible, a refused API key, and a stream that breaks,
goes malformed or falls silent mid-reply (the reply so far is kept)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from app_helpers import send, wait_loaded  # noqa: F401
from server_stubs import REPLY, ShapeServer, free_port

from backends.core.params import SamplingParams
from backends.core.spec import ModelSpec
from backends.generation.open import open_model
from backends.server.client import ServerError
from tui.app import LlmTuiApp
from tui.settings import AppSettings
from tui.widgets.reply import Notice

ROOT = Path(__file__).resolve().parent.parent
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = SamplingParams(temperature=0, max_new_tokens=16)


def first_two_tokens(tokenizer) -> str:
    ids = tokenizer(REPLY, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:2])


def test_a_url_that_does_not_answer_is_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ServerError, match="cannot reach") as err:
        open_model(ModelSpec(source=url))
    assert "is running" in str(err.value)
    run = subprocess.run([sys.executable, "-m", "tui.cli", "run", url, "-p", "hi"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1 and "cannot reach" in run.stderr


def test_a_web_page_is_not_an_openai_server(demo_tokenizer):
    with ShapeServer(demo_tokenizer, fault="html") as server:
        with pytest.raises(ServerError, match="did not answer with JSON") as err:
            open_model(ModelSpec(source=server.url))
    assert "OpenAI-compatible" in str(err.value)


def test_a_refused_api_key_says_where_the_key_goes(demo_tokenizer):
    with ShapeServer(demo_tokenizer, fault="unauthorized") as server:
        with pytest.raises(ServerError, match="401: Invalid API key") as err:
            open_model(ModelSpec(source=server.url))
    assert "api_key_env" in str(err.value)


@pytest.mark.parametrize(("fault", "says"), [("break", "ended before the reply did"),
                                             ("malformed", "not JSON"),
                                             ("silent", "sent nothing for 1 s")])
def test_a_stream_that_fails_mid_reply_keeps_what_came(demo_tokenizer, monkeypatch, fault, says):
    monkeypatch.setenv("LLM_TUI_SERVER_TIMEOUT", "1")
    with ShapeServer(demo_tokenizer, fault=fault) as server:
        handle = open_model(ModelSpec(source=server.url))
        started = time.monotonic()
        events = list(handle.stream(QUESTION, GREEDY))
    done = events[-1]
    assert done.stop_reason == "error" and says in done.error
    assert done.text == first_two_tokens(demo_tokenizer) and len(events) == 3
    assert time.monotonic() - started < 10


def test_the_app_keeps_a_broken_reply_and_goes_on(demo_tokenizer):
    import asyncio

    async def scenario():
        with ShapeServer(demo_tokenizer, fault="break") as server:
            app = LlmTuiApp(AppSettings(models=[server.url], frozen=True))
            async with app.run_test(size=(120, 36)) as pilot:
                await wait_loaded(pilot, app)
                await send(pilot, app, "What is the capital of France?")
                reply = app.chat.last_reply()
                assert reply.text == first_two_tokens(demo_tokenizer) and reply.status == "error"
                errors = [n for n in app.chat.query(Notice) if n.has_class("-error")]
                assert errors and "ended before the reply did" in str(errors[-1].render())
                server.fault = None  # the server is back: the next turn is whole
                await send(pilot, app, "And of Italy?")
                assert app.chat.last_reply().text == REPLY and app.chat.last_reply().status == "complete"

    asyncio.run(scenario())
