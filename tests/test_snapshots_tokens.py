"""SVG snapshots of the output side: a reply coloured by token probability, the
inspector's output view of the token under the cursor, and a branched turn.

The reply and its branch are real: the embedded default model answers at
temperature 0 (its tokens, probabilities and alternatives as generated), and the
branch goes on from the third token's second alternative. They are saved with
fixed times and statistics, so only what the model computed is on screen.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from app_helpers import one_torch_thread, snap_model_dir, wait_for  # noqa: F401
from test_snapshots import FIXED_TIME, SIZES, STATS, make_app, settle, snap_handle  # noqa: F401

from backends.core.params import SamplingParams
from backends.core.paths import data_dir
from backends.generation.branch import branch_prefix
from backends.storage.store import Store
from backends.storage.tokens import StoredToken

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = SamplingParams(temperature=0, max_new_tokens=16, top_logprobs=5)


def answer(handle, prefix=None) -> tuple[str, list[StoredToken]]:
    events = list(handle.stream(QUESTION, GREEDY, prefix=prefix))
    done = events[-1]
    return done.text, [StoredToken(e.id, e.text, e.info) for e in events[:-1]]


@pytest.fixture(scope="module")
def replies(demo_handle):
    """The default model's answer, and the branch from its third token's second alternative."""
    demo_handle.release_cache()  # read whole, whatever an earlier test's conversation left in the cache
    text, tokens = answer(demo_handle)
    return (text, tokens), answer(demo_handle, branch_prefix(tokens, 2, 2))


@pytest.fixture
def token_chat(monkeypatch, replies):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    (text, tokens), (branch_text, branch_tokens) = replies
    path = data_dir() / "llm-tui.sqlite3"
    with Store(path) as store:
        conv = store.new_conversation("tiny-chat", None, {"temperature": 0.0})
        store.add_message(conv, "user", QUESTION[0]["content"])
        reply = store.add_message(conv, "assistant", text, model="tiny-chat", stats=STATS)
        store.update_message(reply, tokens=tokens)
        store.keep_as_branch(reply)
        store.update_message(reply, content=branch_text, tokens=branch_tokens)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE conversations SET created = ?, updated = ?", (FIXED_TIME, FIXED_TIME))
        db.execute("UPDATE messages SET created = ?", (FIXED_TIME,))
        db.execute("UPDATE branches SET created = ?", (FIXED_TIME - 60,))  # the first answer came first
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


async def on_tokens(pilot, *keys: str, without_stop: bool = False) -> None:
    """Press ``keys`` in the chat; ``without_stop``: then wait until the footer has dropped the app's
    "esc Stop" (the cursor's Esc leaves the tokens), which a loaded machine redraws late."""
    from textual.widgets._footer import FooterKey

    await settle(pilot, "")
    pilot.app.chat.focus()
    await pilot.press(*keys)
    if without_stop:
        await wait_for(pilot, lambda: all(k.action != "stop" for k in pilot.app.query(FooterKey)))
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_coloured_reply(snap_compare, snap_handle, token_chat, size):
    async def run_before(pilot):
        await on_tokens(pilot, "t")

    assert snap_compare(make_app(snap_handle), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_output_view(snap_compare, snap_handle, token_chat, size):
    async def run_before(pilot):
        await on_tokens(pilot, "t", "v", "l", "l", "l")

    assert snap_compare(make_app(snap_handle), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_branched_turn(snap_compare, snap_handle, token_chat, size):
    """The second reply of the turn: its label says so, and [ brings the first back."""
    async def run_before(pilot):
        await on_tokens(pilot, "v", "l", "l", without_stop=True)

    assert snap_compare(make_app(snap_handle), terminal_size=size, run_before=run_before)
