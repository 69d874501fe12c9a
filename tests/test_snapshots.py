"""SVG snapshots of the main screens at 80x24 and 160x48 (pytest-textual-snapshot).

Everything on screen is fixed: the conversation comes from a saved session with
fixed stats and timestamps, the model is a tiny one in a folder with a fixed
name, the meter is paused and shown a fixed sample, the cursor does not blink.
Update with: pytest tests/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from app_helpers import one_torch_thread, snap_model_dir, wait_for  # noqa: F401

from backends.checkpoint.consent import CodeFile
from backends.core.paths import data_dir
from backends.hardware.sampling import Sample
from backends.storage.store import Store
from tui.app import LlmTuiApp
from tui.settings import AppSettings

SIZES = [(80, 24), (160, 48)]
REPLY = """Use slicing or `reversed()`:

```python
items = [1, 2, 3]
print(items[::-1])       # [3, 2, 1]
print(list(reversed(items)))
```

Slicing makes a copy; `items.reverse()` reverses in place."""
STATS = {"prompt_tokens": 42, "new_tokens": 57, "ttft_s": 0.061, "decode_tok_s": 212.4, "total_s": 0.33,
         "peak_memory_bytes": None, "memory_kind": "rss", "stop_reason": "eos"}
FIXED_TIME = 1767225600.0  # 2026-01-01 00:00 UTC


@pytest.fixture(scope="module")
def snap_handle(snap_model_dir):
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    return open_model(ModelSpec(source=str(snap_model_dir)))


@pytest.fixture
def saved_chats(monkeypatch):
    """Two saved conversations with fixed content and times."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    path = data_dir() / "llm-tui.sqlite3"
    with Store(path) as store:
        old = store.new_conversation("tiny-chat", None, {"temperature": 0.7})
        store.add_message(old, "user", "Write a haiku about tokenizers")
        store.add_message(old, "assistant", "Bytes become pieces,\nmerges learned from the corpus,\nids march in a row.",
                          model="tiny-chat", stats=STATS)
        new = store.new_conversation("tiny-chat", "You are a concise Python tutor.", {"temperature": 0.0})
        store.add_message(new, "user", "How do I reverse a list in Python?")
        store.add_message(new, "assistant", REPLY, model="tiny-chat", stats=STATS)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE conversations SET created = ?, updated = ? + id * 3600", (FIXED_TIME, FIXED_TIME))
        db.execute("UPDATE messages SET created = ?", (FIXED_TIME,))
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


def fixed_sample() -> Sample:
    return Sample(t=0.0, gpus=(), torch_allocated=None, torch_reserved=None, torch_peak=None,
                  rss=612 * 2**20, sys_ram_used=5 * 2**30, sys_ram_total=16 * 2**30, cpu_percent=37.0)


def make_app(snap_handle, models=None) -> LlmTuiApp:
    return LlmTuiApp(AppSettings(models=models or [], resume="latest", frozen=True), handles={0: snap_handle})


async def settle(pilot, draft: str = "And for a tuple?") -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.models.handle is not None)
    await wait_for(pilot, lambda: app.sessions.store_ready and not app.sessions.loading)  # --resume is read in a worker
    app.input.load_text(draft)
    await wait_for(pilot, lambda: app.inspector.view is not None and app.input.text == draft
                   and app.status.info.context_used == len(app.inspector.view.ids))
    for _ in range(3):
        app.meter.feed(fixed_sample(), "no NVIDIA GPU: NVML library not found")
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_screen(snap_compare, snap_handle, saved_chats, size):
    assert snap_compare(make_app(snap_handle), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help_screen(snap_compare, snap_handle, saved_chats, size):
    async def run_before(pilot):
        await settle(pilot)
        pilot.app.chat.focus()
        await pilot.press("question_mark")
        await pilot.pause(0.1)

    assert snap_compare(make_app(snap_handle), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_model_picker(snap_compare, snap_handle, saved_chats, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("f2")
        await pilot.pause(0.1)

    app = make_app(snap_handle, models=["tiny-chat", "qwen-7b-int4", "/models/glm-4-9b-chat"])
    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_consent_screen(snap_compare, snap_handle, saved_chats, size):
    files = [CodeFile("configuration_qwen.py", 2_361, "5f0c4a8d" * 8),
             CodeFile("modeling_qwen.py", 55_479, "0be21d9c" * 8),
             CodeFile("tokenization_qwen.py", 9_618, "c4d9a7e1" * 8)]

    async def run_before(pilot):
        from tui.screens.consent import ConsentScreen

        await settle(pilot)
        pilot.app.push_screen(ConsentScreen("Qwen-7B-Chat", "/models/Qwen-7B-Chat", files))
        await pilot.pause(0.1)

    assert snap_compare(make_app(snap_handle), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sessions_screen(snap_compare, snap_handle, saved_chats, size):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("f3")
        await pilot.pause(0.1)

    assert snap_compare(make_app(snap_handle), terminal_size=size, run_before=run_before)


def test_zoomed_inspector_when_narrow(snap_compare, snap_handle, saved_chats):
    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("f5")  # too narrow for side panes: F5 shows the inspector full screen
        await pilot.pause(0.1)

    assert snap_compare(make_app(snap_handle), terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_memory_screen_with_a_profile(snap_compare, snap_handle, saved_chats, size):
    from backends.hardware.history import TurnMemory
    from backends.profile.measure import ProfileRow
    from tui.screens.memory import MemoryScreen

    mib = 2**20
    turns = [TurnMemory(i + 1, 180 + 420 * i, 540 * mib + i * 3 * mib, None, None) for i in range(4)]
    rows = [ProfileRow(context_tokens=c, decode_tokens=16, peak_bytes=560 * mib + c * 9_000, base_bytes=540 * mib,
                       kv_bytes=c * 46_080, kv_bytes_per_token=46_080.0, kv_estimate_bytes=c * 46_080,
                       prefill_s=c / 2_000, prefill_tok_s=2_000.0 - c / 4, decode_tok_s=48.0 - c / 256,
                       memory_kind="rss") for c in (256, 512, 1024, 2048)]
    rows.append(ProfileRow(context_tokens=4096, decode_tokens=16, error="out of memory"))
    note = "out of memory at 4,096 tokens of context (the 4 rows before it are complete)"

    async def run_before(pilot):
        await settle(pilot)
        pilot.app.push_screen(MemoryScreen(turns, rows, profile_label="tiny-chat", note=note, note_error=True))
        await pilot.pause(0.1)

    assert snap_compare(make_app(snap_handle), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fit_screen(snap_compare, snap_model_dir, saved_chats, monkeypatch, size):
    """The question asked when a turn would not fit: a real plan for the tiny model under a --max-memory cap."""
    from backends.core.params import SamplingParams
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model
    from backends.memory.fit import plan_turn
    from backends.memory.turn import turn_needs
    from backends.memory.weights import weights_on
    from tui.screens.fit import FitScreen

    monkeypatch.setenv("LLM_TUI_MEMORY_CHECK", "warn")  # the load check budgets a 2k context
    plain = open_model(ModelSpec(source=str(snap_model_dir)))
    cap = weights_on(plain.model, "cpu") + turn_needs(plain, 150, 16)
    handle = open_model(ModelSpec(source=str(snap_model_dir), max_memory=f"cpu={cap}"))
    messages = []
    for n in range(6):
        messages += [{"role": "user", "content": f"question {n} " + "word " * 20},
                     {"role": "assistant", "content": f"answer {n} " + "text " * 30}]
    messages.append({"role": "user", "content": "and the last question?"})
    fit = plan_turn(handle, messages, SamplingParams(max_new_tokens=16))
    assert not fit.fits and fit.can_truncate

    async def run_before(pilot):
        await settle(pilot)
        pilot.app.push_screen(FitScreen(fit))
        await pilot.pause(0.1)

    assert snap_compare(make_app(handle), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_context_fit_screen(snap_compare, snap_handle, saved_chats, size):
    """A turn past the model's context: truncate or a shorter reply, never "send anyway"."""
    from backends.core.params import SamplingParams
    from backends.memory.fit import plan_turn
    from tui.screens.fit import FitScreen

    context = snap_handle.info.max_context
    messages = []
    for n in range(4):
        messages += [{"role": "user", "content": f"question {n} " + "word " * 1500},
                     {"role": "assistant", "content": f"answer {n} " + "text " * 300}]
    messages.append({"role": "user", "content": "and the last question?"})
    fit = plan_turn(snap_handle, messages, SamplingParams(max_new_tokens=1024))
    assert fit.over == "context" and fit.can_truncate and fit.reply_room and fit.prompt_tokens < context

    async def run_before(pilot):
        await settle(pilot)
        pilot.app.push_screen(FitScreen(fit))
        await pilot.pause(0.1)

    assert snap_compare(make_app(snap_handle), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_damaged_database_screen(snap_compare, snap_handle, saved_chats, size):
    from tui.screens.damaged_store import DamagedStoreScreen

    async def run_before(pilot):
        await settle(pilot)
        pilot.app.push_screen(DamagedStoreScreen("~/.local/share/llm-tui/llm-tui.sqlite3",
                                                 "*** in database main *** Page 6: btreeInitPage() returns error code 11"))
        await pilot.pause(0.1)

    assert snap_compare(make_app(snap_handle), terminal_size=size, run_before=run_before)
