"""SVG snapshots of compare mode: the default model against its 4-bit (nf4) copy answering one
question side by side, their replies coloured by divergence, and the token view that sets the two
models' likeliest tokens side by side.

The replies and figures are real (temperature 0, computed on this CPU); the time figures of each
reply (TTFT, tok/s) are set to fixed ones once the turn has ended, so only what the models computed
is on screen.
"""

from __future__ import annotations

import pytest
from app_helpers import compare_ended, wait_for
from test_snapshots import SIZES, STATS, fixed_sample

from backends.core.spec import ModelSpec
from backends.generation.open import open_model
from tui.app import LlmTuiApp
from tui.settings import AppSettings
from tui.widgets.compared import ComparedTurn


@pytest.fixture(scope="module")
def demo_nf4(demo_dir, demo_handle):
    yield open_model(ModelSpec(quant="nf4", prompt_cache=False))
    demo_handle.release_cache()  # the shared default model leaves this module without a kept conversation


def compare_app(demo_handle, demo_nf4) -> LlmTuiApp:
    return LlmTuiApp(AppSettings(models=["default", "default@nf4"], frozen=True),
                     handles={0: demo_handle, 1: demo_nf4})


async def compared(pilot, *keys: str) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.models.handle is not None and app.sessions.store_ready)
    for line in ("/set temperature 0", "/set max_new_tokens 12", "/compare 1 2", "What is the capital of France?"):
        app.input.load_text(line)
        await pilot.press("enter")
        await pilot.pause()
    await wait_for(pilot, lambda: compare_ended(app), 120)
    for pane in app.chat.query_one(ComparedTurn).panes:  # fixed time figures: only what was computed shows
        pane.stats = {**STATS, "prompt_tokens": pane.stats["prompt_tokens"], "new_tokens": len(pane.tokens)}
        pane.refresh_stats()
    for _ in range(3):
        app.meter.feed(fixed_sample(), "no NVIDIA GPU: NVML library not found")
    app.chat.focus()
    await pilot.press(*keys)
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compared_turn(snap_compare, demo_handle, demo_nf4, size):
    async def run_before(pilot):
        await compared(pilot)

    assert snap_compare(compare_app(demo_handle, demo_nf4), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_divergence_colouring(snap_compare, demo_handle, demo_nf4, size):
    async def run_before(pilot):
        await compared(pilot, "d")

    assert snap_compare(compare_app(demo_handle, demo_nf4), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compared_token_view(snap_compare, demo_handle, demo_nf4, size):
    async def run_before(pilot):
        await compared(pilot, "d", "v", "up", "l", "l")

    assert snap_compare(compare_app(demo_handle, demo_nf4), terminal_size=size, run_before=run_before)
