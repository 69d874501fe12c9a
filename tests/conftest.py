"""Shared fixtures: the real default model, tiny random-weight models with a real
tokenizer, and isolated config/data directories for every test."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Checkpoint code the tests load with trust_remote_code is copied by transformers
# into its modules cache: keep that out of the user's home.
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="llm-tui-hf-modules-"))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch):
    """Config and data go to fresh folders; the model cache is shared (the
    default model takes ~30 s to prepare, once per machine)."""
    base = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LLM_TUI_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("LLM_TUI_DATA_DIR", str(base / "data"))
    yield base


@pytest.fixture(autouse=True)
def observed_turns(monkeypatch):
    """Apps run by a test record each ``TurnDone`` they handle in ``app.turns_done``, oldest first:
    tests observe a turn's end through its message, as the app does, not through app state kept
    for them."""
    app_module = sys.modules.get("tui.app")  # loaded by the app tests at collection
    if app_module is None:
        yield
        return
    from tui.messages import TurnDone

    run_test = app_module.LlmTuiApp.run_test

    def observing(app, *args, message_hook=None, **kwargs):
        app.turns_done = seen = []

        def hook(message) -> None:
            # A bubbling message is dispatched once per widget on its way up: record it once.
            if isinstance(message, TurnDone) and all(m is not message for m in seen):
                seen.append(message)
            if message_hook is not None:
                message_hook(message)

        return run_test(app, *args, message_hook=hook, **kwargs)

    monkeypatch.setattr(app_module.LlmTuiApp, "run_test", observing)
    yield


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    """The embedded default model, prepared (downloaded and converted) on first use."""
    from backends.checkpoint.demo import ensure_demo

    return ensure_demo()


@pytest.fixture(scope="session")
def demo_tokenizer(demo_dir):
    """The default model's tokenizer (transformers'), for what servers render and send."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_dir))


@pytest.fixture(scope="session")
def demo_handle(demo_dir):
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    handle = open_model(ModelSpec(engine="generate"))  # transformers, whatever else is installed
    yield handle


def build_tiny_model(demo_dir: Path, out: Path, *, layers: int = 2, hidden: int = 64,
                     suppress_eos: bool = False, seed: int = 0) -> Path:
    """A random-weight Llama with the default model's real tokenizer and chat template."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = 2
    if suppress_eos:
        # Never end early: streams always run to max_new_tokens (for long-reply tests).
        model.generation_config.suppress_tokens = list(range(0, 17))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (demo_dir / name).exists():
            shutil.copy(demo_dir / name, out / name)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(demo_dir, tmp_path_factory) -> Path:
    return build_tiny_model(demo_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_long_model_dir(demo_dir, tmp_path_factory) -> Path:
    """Tiny model that never emits EOS: every reply is exactly max_new_tokens long."""
    return build_tiny_model(demo_dir, tmp_path_factory.mktemp("tiny-llama-long"), suppress_eos=True)


@pytest.fixture(scope="session")
def tiny_handle(tiny_model_dir):
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    return open_model(ModelSpec(source=str(tiny_model_dir)))
