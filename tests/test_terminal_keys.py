"""Keys over SSH, through a real pseudo-terminal: bursts, pastes with escapes, Esc, quitting, SIGTERM.

Everything typed here arrives the way a fast typist, ``tmux send-keys`` or a
laggy SSH link delivers it: several keys in one read.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from terminal import TerminalApp, wait_until

from backends.core.paths import config_dir, data_dir
from backends.storage.store import Store
from tui.terminal_input import PASTE_END, PASTE_START, PasteFilter

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")


def short_replies() -> None:
    config_dir().mkdir(parents=True, exist_ok=True)
    (config_dir() / "config.toml").write_text("[defaults]\nmax_new_tokens = 4\ntemperature = 0\n")


def user_messages(db) -> list[str]:
    if not db.exists():
        return []
    with Store(db) as store:
        conv = store.latest_conversation_id()
        if conv is None:
            return []
        return [m.content for m in store.load_conversation(conv).messages if m.role == "user"]


def test_bursts_pastes_and_esc_keep_every_character_in_order(tiny_model_dir):
    short_replies()
    db = data_dir() / "llm-tui.sqlite3"
    app = TerminalApp(str(tiny_model_dir))
    try:
        wait_until(lambda: b"model 1:" in app.output, 120, "the model did not load", app)
        # Text and Enter in one write: the Enter must not overtake the text.
        app.type("Say hi\r")
        wait_until(lambda: user_messages(db) == ["Say hi"], 20, "the burst was not sent", app)
        # A bracketed paste holding an escape sequence, then Enter, all in one write.
        app.type(f"{PASTE_START}AAA\x1b[31mBBB{PASTE_END}\r")
        wait_until(lambda: len(user_messages(db)) == 2, 20, "the paste was not sent", app)
        assert user_messages(db)[1] == "AAA␛[31mBBB"  # in order, the escape shown, never acted on
        # Esc leaves the input; a paste right after it still lands there, and so do typed keys.
        app.type("\x1b")
        time.sleep(0.5)
        app.type(f"{PASTE_START}after esc{PASTE_END}")
        time.sleep(0.3)
        app.type("\x1b")
        time.sleep(0.5)
        app.type("!\r")
        wait_until(lambda: len(user_messages(db)) == 3, 20, "the paste after Esc was lost", app)
        assert user_messages(db)[2] == "after esc!"
        app.type("\x11")  # Ctrl+Q
        wait_until(lambda: app.process.poll() is not None, 20, "Ctrl+Q did not quit", app)
        assert app.process.returncode == 0
        wal = db.with_name(db.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0  # folded into the database on the way out
    finally:
        app.close()


def test_sigterm_during_a_long_prefill_ends_the_process_with_143(demo_dir):
    db = data_dir() / "llm-tui.sqlite3"
    app = TerminalApp()
    try:
        wait_until(lambda: b"model 1:" in app.output, 120, "the model did not load", app)
        app.type(PASTE_START + "word " * 5000 + PASTE_END)  # a prefill of minutes on a CPU
        time.sleep(0.5)
        app.type("\r")
        wait_until(lambda: len(user_messages(db)) == 1, 30, "the long message was not sent", app)
        time.sleep(1.0)
        started = time.monotonic()
        app.process.send_signal(signal.SIGTERM)
        wait_until(lambda: app.process.poll() is not None, 15, "SIGTERM did not end the process", app)
        assert app.process.returncode == 143
        assert time.monotonic() - started < 8
    finally:
        app.close()


# -- the paste filter on its own ---------------------------------------------------------------


def filtered(chunks: list[str]) -> str:
    pastes = PasteFilter()
    return "".join(pastes.feed(chunk) for chunk in chunks)


def test_escapes_inside_a_paste_are_shown_and_outside_left_alone():
    data = f"a\x1b[Ab{PASTE_START}x\x1b[31my\x1b{PASTE_END}\x1bOP"
    assert filtered([data]) == f"a\x1b[Ab{PASTE_START}x␛[31my␛{PASTE_END}\x1bOP"
    assert filtered(["\x1b"]) == "\x1b"  # a lone Esc press goes through at once


@given(st.lists(st.integers(min_value=0, max_value=60), max_size=8))
def test_a_paste_split_anywhere_comes_out_the_same(cuts):
    data = f"k\x1b[B{PASTE_START}pa\x1bste\x1b[201 not the end\x1b[2{PASTE_END}z\x1b"
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    assert filtered(chunks) == filtered([data])
