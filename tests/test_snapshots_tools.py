"""SVG snapshots of a tool round at 80x24 and 160x48: a call waiting for consent, and a finished round.

The conversations are saved ones with fixed stats and times, reopened with a real MCP server
(tests/fixtures/mcp_server.py) offering its tools: a conversation that ended at a call still
waiting for an answer asks again when it is reopened, so the dialog is the app's own.
Update with: pytest tests/test_snapshots_tools.py --snapshot-update
"""

from __future__ import annotations

import sqlite3

import pytest
from app_helpers import mcp_config, one_torch_thread, tool_model_dir, wait_for  # noqa: F401
from test_snapshots import FIXED_TIME, STATS, fixed_sample

from backends.core.paths import data_dir
from backends.storage.store import Store
from tui.app import LlmTuiApp
from tui.screens.tool_consent import ToolConsentScreen
from tui.settings import AppSettings

SIZES = [(80, 24), (160, 48)]
QUESTION = "What is the weather in Paris, in Celsius?"
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
RESULT = '{"city": "Paris", "sky": "clear", "celsius": 21}'
ANSWER = "It is clear in Paris: 21 °C."
CALL_STATS = {**STATS, "new_tokens": 24}


@pytest.fixture(scope="module")
def tool_snap_handle(tool_model_dir):
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    return open_model(ModelSpec(source=str(tool_model_dir)))


def save(messages) -> None:
    path = data_dir() / "llm-tui.sqlite3"
    with Store(path) as store:
        conv = store.new_conversation("tiny-tools", None, {"temperature": 0.0})
        for role, content, stats in messages:
            store.add_message(conv, role, content, model="tiny-tools" if role == "assistant" else None, stats=stats)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE conversations SET created = ?, updated = ?", (FIXED_TIME, FIXED_TIME))
        db.execute("UPDATE messages SET created = ?", (FIXED_TIME,))


def call_stats(outcome: str, seconds: float | None = None) -> dict:
    call = {"name": "get_weather", "arguments": {"city": "Paris"}, "outcome": outcome}
    if seconds is not None:
        call["seconds"] = seconds
    return {**CALL_STATS, "tool": {"calls": [call]}}


def make_app(handle, tmp_path) -> LlmTuiApp:
    return LlmTuiApp(AppSettings(resume="latest", frozen=True, mcp=("test",)), config=mcp_config(tmp_path),
                     handles={0: handle})


async def settled(pilot, *, dialog: bool) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.models.handle is not None and "get_weather" in app.tools.offered, 60)
    await wait_for(pilot, lambda: app.sessions.store_ready and not app.sessions.loading)
    if dialog:
        await wait_for(pilot, lambda: isinstance(app.screen, ToolConsentScreen), 60)
    await wait_for(pilot, lambda: app.inspector.view is not None
                   and app.status.info.context_used == len(app.inspector.view.ids))
    for _ in range(3):
        app.meter.feed(fixed_sample(), "no NVIDIA GPU: NVML library not found")
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tool_call_awaiting_consent(snap_compare, tool_snap_handle, tmp_path, size):
    save([("user", QUESTION, None), ("assistant", CALL, call_stats("waiting"))])

    async def run_before(pilot):
        await settled(pilot, dialog=True)

    assert snap_compare(make_app(tool_snap_handle, tmp_path), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tool_round_finished(snap_compare, tool_snap_handle, tmp_path, size):
    save([("user", QUESTION, None), ("assistant", CALL, call_stats("ran", 0.021)),
          ("tool", RESULT, {"tool": {"name": "get_weather", "error": False, "seconds": 0.021}}),
          ("assistant", ANSWER, STATS)])

    async def run_before(pilot):
        await settled(pilot, dialog=False)
        pilot.app.input.focus()

    assert snap_compare(make_app(tool_snap_handle, tmp_path), terminal_size=size, run_before=run_before)
