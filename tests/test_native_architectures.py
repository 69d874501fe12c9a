"""Tiny Qwen2, Yi (Llama) and GLM-4 checkpoints stream through the engine with
the preview equal to what the model's first forward received."""

from __future__ import annotations

import pytest

from backends.core.events import DoneEvent, TokenEvent
from backends.core.params import SamplingParams

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello 你好 👋"},
    {"role": "assistant", "content": "Hi there."},
    {"role": "user", "content": "What's new?"},
]


@pytest.fixture(scope="module", params=["qwen2", "yi", "glm4"])
def native_dir(request, demo_dir, tmp_path_factory):
    from native_architectures import build

    return request.param, build(request.param, demo_dir, tmp_path_factory.mktemp(request.param))


def test_streams_with_preview_equal_to_captured(native_dir):
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model
    from backends.prompt.families.detect import detect_family
    from backends.prompt.family_for import open_family

    kind, path = native_dir
    assert detect_family(path) == kind
    family, _ = open_family(ModelSpec(source=str(path)))
    preview = family.render(CONVERSATION)
    handle = open_model(ModelSpec(source=str(path)))
    generation = handle.stream(CONVERSATION, SamplingParams(temperature=0, max_new_tokens=12))
    events = list(generation)
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.stop_reason in ("eos", "length")
    assert done.captured_ids == preview.ids
    assert generation.done.captured_ids == generation.view.ids
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == done.text
    # every message is marked in the view, and special tokens are flagged
    assert {s.index for s in preview.spans if s.index >= 0} == {0, 1, 2, 3}
    assert any(preview.special)
    handle.unload()


def test_glm4_prompt_starts_with_its_prefix_tokens(native_dir):
    from backends.core.spec import ModelSpec
    from backends.prompt.family_for import open_family

    kind, path = native_dir
    family, _ = open_family(ModelSpec(source=str(path)))
    view = family.render(CONVERSATION)
    if kind == "glm4":
        assert view.pieces[:2] == ["[gMASK]", "<sop>"] and view.pieces[-1] == "<|assistant|>"
    elif kind == "yi":
        assert view.text.startswith("Be brief.<|im_start|>user\n")
    else:
        assert view.text.endswith("<|im_start|>assistant\n")


def test_streams_through_the_app_with_the_check_mark(native_dir):
    """The same tiny checkpoint driven through the real app: the inspector's
    verdict after sending is ✓ (captured IDs == preview)."""
    import asyncio

    from app_helpers import send, wait_for, wait_loaded

    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model
    from tui.app import LlmTuiApp
    from tui.settings import AppSettings

    kind, path = native_dir
    handle = open_model(ModelSpec(source=str(path)))

    async def scenario():
        app = LlmTuiApp(AppSettings(), handles={0: handle})
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_loaded(pilot, app)
            app.turns.params = app.turns.params.with_value("temperature", "0").with_value("max_new_tokens", "8")
            await send(pilot, app, "Hello 你好 👋")
            done = app.turns_done[-1].done
            assert done.stop_reason in ("eos", "length")
            await wait_for(pilot, lambda: app.inspector.verdict is not None)
            assert app.inspector.verdict is True
            assert app.inspector.view.family == kind
            assert done.captured_ids == app.inspector.check.ids == app.inspector.view.ids
            # the status bar shows the KV cache of the context and how much more fits
            assert app.status.info.kv.startswith("KV ") and "more tok fit" in app.status.info.kv

    asyncio.run(scenario())
    handle.unload()
