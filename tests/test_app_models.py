"""Switching models in the running app, the model picker, and the remote-code consent screen."""

from __future__ import annotations

import asyncio
import hashlib

from app_helpers import (  # noqa: F401
    one_torch_thread,
    screen_text,
    send,
    tiny_pair,
    wait_for,
    wait_loaded,
)

from tui.app import LlmTuiApp
from tui.settings import AppSettings, LoadOptions, spec_for
from tui.widgets.reply import Reply


def test_switching_models_mid_conversation(tiny_pair):
    a, b = tiny_pair

    async def scenario():
        app = LlmTuiApp(AppSettings(models=[str(a), str(b)]))
        async with app.run_test(size=(140, 40)) as pilot:
            await wait_loaded(pilot, app)
            app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", "6")
            await send(pilot, app, "hello")
            assert app.chat.last_reply().model == "tiny-a"
            handle_a = app.models.slots[0].handle

            await pilot.press("escape")  # leave the input: number keys switch models
            assert app.focused is app.chat
            await pilot.press("2")
            await wait_for(pilot, lambda: app.models.active == 1 and app.models.loading is None)
            assert app.models.slots[0].handle is None  # unloaded (no --keep-loaded)
            assert handle_a.model is None
            assert app.status.info.model == "tiny-b"
            handle_b = app.models.handle
            # The inspector re-renders the same conversation for the new model.
            expected = handle_b.render(app.turns.conversation.copy_messages()).ids
            await wait_for(pilot, lambda: app.inspector.view is not None and app.inspector.view.ids == expected)

            await send(pilot, app, "and now?")
            replies = list(app.chat.query(Reply))
            assert [r.model for r in replies] == ["tiny-a", "tiny-b"]
            assert [m["role"] for m in app.turns.conversation.messages] == ["user", "assistant", "user", "assistant"]
            stored = app.recorder.store.load_conversation(app.recorder.conversation_id)
            assert [m.model for m in stored.messages if m.role == "assistant"] == ["tiny-a", "tiny-b"]
            assert stored.model == "tiny-b" and stored.meta["family"] == handle_b.info.family

            await pilot.press("f2")  # the picker: 1-9 pick directly
            assert type(app.screen).__name__ == "ModelPicker"
            await pilot.pause(0.2)
            assert "tiny-a" in screen_text(app) and "active" in screen_text(app)
            await pilot.press("1")
            await wait_for(pilot, lambda: app.models.active == 0 and app.models.loading is None)
            assert app.models.slots[1].handle is None

    asyncio.run(scenario())


def test_keep_loaded_keeps_both_models(tiny_pair):
    a, b = tiny_pair

    async def scenario():
        app = LlmTuiApp(AppSettings(models=[str(a), str(b)], keep_loaded=True))
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_loaded(pilot, app)
            await pilot.press("alt+2")  # works while typing
            await wait_for(pilot, lambda: app.models.active == 1 and app.models.loading is None)
            assert app.models.slots[0].handle is not None and app.models.slots[0].handle.model is not None
            await pilot.press("alt+1")
            await wait_for(pilot, lambda: app.models.active == 0)
            await command_model(pilot, app, "/model 2")
            assert app.models.active == 1

    asyncio.run(scenario())


async def command_model(pilot, app, text):
    app.input.load_text(text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.models.loading is None)


def test_a_model_that_fails_to_load_leaves_the_app_running(tiny_pair, tmp_path):
    missing = tmp_path / "no-such-model"

    async def scenario():
        app = LlmTuiApp(AppSettings(models=[str(missing), str(tiny_pair[0])]))
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.models.loading is None and app._notifications)
            messages = [n.message for n in app._notifications]
            assert any("does not exist" in m for m in messages), messages
            assert app.models.handle is None
            app.input.load_text("hello")
            await pilot.press("enter")  # refused with one line, the text stays
            assert app.input.text == "hello"
            await pilot.press("alt+2")
            await wait_loaded(pilot, app)
            assert app.status.info.model == "tiny-a"

    asyncio.run(scenario())


def test_remote_code_asks_first_then_loads_with_consent(tmp_path):
    from remote_standins import make_tinyqwen_dir

    folder = make_tinyqwen_dir(tmp_path / "tinyqwen")
    py_files = sorted(folder.glob("*.py"))

    async def scenario():
        app = LlmTuiApp(AppSettings(models=[str(folder)], options=LoadOptions()))
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: type(app.screen).__name__ == "ConsentScreen")
            await pilot.pause(0.2)
            text = screen_text(app)
            for path in py_files:
                assert path.name in text
                assert hashlib.sha256(path.read_bytes()).hexdigest() in text
                assert f"{path.stat().st_size:,} bytes" in text
            assert app.models.handle is None
            await pilot.press("n")
            await pilot.pause()
            assert app.models.handle is None and "not allowed" in screen_text(app)

            await pilot.press("alt+1")  # ask again, and allow it this time
            await wait_for(pilot, lambda: type(app.screen).__name__ == "ConsentScreen")
            await pilot.press("y")
            await wait_loaded(pilot, app)
            assert app.models.current.spec.trust_remote_code
            assert app.status.info.family == "qwen"

    asyncio.run(scenario())


def test_the_picker_loads_a_model_quantized(tiny_pair):
    """F2, q to choose nf4, a number to load: the same checkpoint comes up as a slot of its own, in 4-bit."""
    a, _ = tiny_pair

    async def scenario():
        app = LlmTuiApp(AppSettings(models=[str(a)]))
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_loaded(pilot, app)
            plain = app.models.handle.info.footprint_bytes
            await pilot.press("escape")  # leave the input
            await pilot.press("f2")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "ModelPicker")
            assert "Load as (q): as configured" in screen_text(app)
            await pilot.press("q", "q")
            assert app.screen.quant == "nf4"
            await pilot.press("1")
            await wait_for(pilot, lambda: app.models.active == 1 and app.models.loading is None, timeout=120)
            slot = app.models.current
            assert slot.name == f"{a} (nf4)" and slot.spec.quant == "nf4"
            assert app.models.handle.info.quant == "nf4" and app.models.handle.info.footprint_bytes < plain
            assert app.models.slots[0].handle is None  # the fp32 one was unloaded
            assert "nf4" in app.status.info.quant
            app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", "4")
            await send(pilot, app, "hello")
            assert app.chat.last_reply().status == "complete"
            # /model NAME QUANT does the same from the input; the fp32 slot is found again by name.
            await command_model(pilot, app, f"/model {a} none")
            assert app.models.active == 0 and app.models.handle.info.quant == "none"

    asyncio.run(scenario())


def test_the_app_honours_the_bitsandbytes_flags(tiny_model_dir):
    """--bnb-double-quant and --bnb-compute-dtype reach the loaded model, as they do for `run`."""
    import torch

    from tui.cli import app_parser, command_parser
    from tui.headless import spec_from_args

    argv = [str(tiny_model_dir), "--quant", "nf4", "--bnb-double-quant", "--bnb-compute-dtype", "bf16"]
    settings = AppSettings.from_args(app_parser().parse_args(argv))

    async def scenario():
        app = LlmTuiApp(settings)
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_loaded(pilot, app)
            slot = app.models.current
            assert (slot.spec.bnb_double_quant, slot.spec.bnb_compute_dtype) == (True, "bf16")
            config = slot.handle.model.config.quantization_config
            assert config.bnb_4bit_use_double_quant is True
            assert config.bnb_4bit_compute_dtype == torch.bfloat16
            assert slot.handle.info.quant == "nf4+dq"  # shown as such in the status bar and picker

    asyncio.run(scenario())
    # The headless commands build the same spec from the same flags.
    run_args = command_parser("run").parse_args([str(tiny_model_dir), "-p", "hi", *argv[1:]])
    assert spec_from_args(run_args) == spec_for(str(tiny_model_dir), settings.options)
