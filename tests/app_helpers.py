"""Helpers for driving the real app in tests: waiting, reading the screen, shared tiny models."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from conftest import build_tiny_model


async def wait_for(pilot, predicate, timeout: float = 30.0, step: float = 0.05) -> None:
    """Let the app run until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        await pilot.pause(step)


async def wait_loaded(pilot, app, timeout: float = 60.0) -> None:
    await wait_for(pilot, lambda: app.models.handle is not None and app.models.loading is None, timeout)


async def send(pilot, app, text: str, *, timeout: float = 60.0) -> None:
    """Type ``text`` into the input (as one paste) and press Enter; wait for the reply to end."""
    before = len(app.turns_done)
    app.input.focus()
    app.input.load_text(text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: len(app.turns_done) > before and app.turns.turn is None, timeout)
    await pilot.pause()


async def command(pilot, app, text: str) -> None:
    app.input.focus()
    app.input.load_text(text)
    await pilot.press("enter")
    await pilot.pause()


def screen_text(app) -> str:
    """What the terminal shows, as plain text (the same render as a screenshot)."""
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def screen_ansi(app) -> str:
    """The bytes a terminal would receive for the current screen (escape sequences included)."""
    from rich.console import Console

    width, height = app.size
    out = io.StringIO()
    console = Console(width=width, height=height, file=out, force_terminal=True, color_system="truecolor",
                      legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return out.getvalue()


def generation_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "llm-tui-generate" and t.is_alive()]


@pytest.fixture(scope="session")
def tiny_pair(demo_dir, tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny models with different weights (for switching mid-conversation)."""
    base = tmp_path_factory.mktemp("pair")
    return (build_tiny_model(demo_dir, base / "tiny-a", seed=1),
            build_tiny_model(demo_dir, base / "tiny-b", seed=2))


@pytest.fixture(scope="session")
def snap_model_dir(demo_dir, tmp_path_factory) -> Path:
    """A tiny model in a folder with a fixed name, so labels in snapshots never change."""
    return build_tiny_model(demo_dir, tmp_path_factory.mktemp("snap") / "tiny-chat")


@pytest.fixture(scope="session")
def tool_model_dir(demo_dir, tmp_path_factory) -> Path:
    """A tiny model (in a folder with a fixed name) whose chat template offers tools and renders their
    results as turns of role tool."""
    import json

    from test_tools_render import TOOLS_CHATML

    folder = build_tiny_model(demo_dir, tmp_path_factory.mktemp("tools") / "tiny-tools")
    config = folder / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data["chat_template"] = TOOLS_CHATML
    config.write_text(json.dumps(data))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


def mcp_config(tmp_path, calls_file=None):
    """A config whose one MCP server, ``test``, is tests/fixtures/mcp_server.py over stdio (each call it
    runs is written to ``calls_file``)."""
    import sys

    from backends.mcp.client import ServerConfig
    from backends.storage.config import Config

    server = Path(__file__).parent / "fixtures" / "mcp_server.py"
    env = {"MCP_CALLS": str(calls_file)} if calls_file is not None else None
    return Config(path=tmp_path / "config.toml",
                  mcp_servers={"test": ServerConfig("test", command=sys.executable, args=(str(server),), env=env)})


@pytest.fixture(scope="session")
def long_handle(tiny_long_model_dir):
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    return open_model(ModelSpec(source=str(tiny_long_model_dir)))


def script(handle, text: str) -> None:
    """Make a real (tiny, random-weight) model answer ``text`` exactly, token by token.

    transformers' ``sequence_bias`` favours each next token of ``text`` after the
    tokens before it, then the end of turn; generation, streaming and decoding
    all run as usual.
    """
    ids = handle.tokenizer.encode(text, add_special_tokens=False)
    context = 8
    bias = [[ids[:1], 50.0]]
    bias += [[ids[max(0, i - context):i + 1], 100.0 + i] for i in range(1, len(ids))]
    eos = handle.model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    bias.append([ids[-context:] + [eos], 1000.0])
    handle.model.generation_config.sequence_bias = bias


@pytest.fixture(scope="session")
def scripted_handle(tiny_model_dir):
    """A tiny model of its own, to be scripted with ``script()``."""
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    return open_model(ModelSpec(source=str(tiny_model_dir)))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models decode fastest on one thread (and two threads crawl when the CPU is shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def compare_ended(app) -> bool:
    """The compared turn is over: nothing runs, and the last compared turn has the reply it goes on from."""
    from tui.widgets.compared import ComparedTurn

    turns = app.chat.query(ComparedTurn)
    return app.comparing.running is None and bool(turns) and turns.last().kept is not None
