"""Ending the process promptly, through a real pseudo-terminal: a signal while the event loop is
busy, and quitting while Textual's own shutdown blocks.

Once quitting begins, ``launch.ExitWatchdog`` ends the process ``EXIT_GRACE_SECONDS`` later
(after saving and giving the terminal its modes back) if it is still there.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from terminal import TerminalApp, wait_until
from test_terminal_keys import first_turn, short_replies, type_in_reads, user_messages

from backends.core.paths import data_dir

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")

#: Imported before the app by the process under test: Textual's shutdown never ends, as when it
#: hung in ``LinuxDriver.stop_application_mode → disable_input``, joining its input thread.
BLOCKED_SHUTDOWN = '''
import threading

from textual.drivers.linux_driver import LinuxDriver

LinuxDriver.disable_input = lambda self: threading.Event().wait()
'''


def test_sigterm_while_a_megabyte_arrives_as_keystrokes_ends_the_process_within_3_s(tiny_model_dir):
    short_replies()
    db = data_dir() / "llm-tui.sqlite3"
    text = "The quick brown fox jumps over the lazy dog. " * 22_223  # 1 MB
    app = TerminalApp(str(tiny_model_dir))
    try:
        first_turn(app, db, "said before")
        started = time.monotonic()
        type_in_reads(app, text + "\r")
        wait_until(lambda: len(user_messages(db)) == 2, 60, "the megabyte was not sent", app)
        took = time.monotonic() - started
        print(f"a {len(text):,}-character paste typed as keys: sent after {took:.2f} s")
        assert user_messages(db)[1] == text
        assert took < 15
        # The app is now busy drawing a megabyte of chat and of prompt preview.
        took = app.end_with(signal.SIGTERM, 10)
        print(f"SIGTERM while busy: ended after {took:.2f} s")
        assert app.process.returncode == 143
        assert took < 3
        assert user_messages(db) == ["said before", text]
    finally:
        app.close()


def test_sigterm_during_a_keystroke_paste_ends_the_process_within_3_s(tiny_model_dir):
    db = data_dir() / "llm-tui.sqlite3"
    app = TerminalApp(str(tiny_model_dir))
    try:
        wait_until(lambda: b"model 1:" in app.output, 120, "the model did not load", app)
        app.type("said before\r")
        wait_until(lambda: user_messages(db)[:1] == ["said before"], 20, "the first message was not sent", app)
        type_in_reads(app, "The quick brown fox jumps over the lazy dog. " * 22_223)
        time.sleep(0.5)  # the input is taking the megabyte: one edit, then drawing it
        took = app.end_with(signal.SIGTERM, 10)
        print(f"SIGTERM during a megabyte typed as keys: ended after {took:.2f} s")
        assert app.process.returncode == 143
        assert took < 3
        assert user_messages(db)[:1] == ["said before"]
    finally:
        app.close()


@pytest.mark.parametrize("how, code", [("ctrl+q", 0), ("sighup", 129)])
def test_quitting_ends_the_process_though_textual_shutdown_blocks(tiny_model_dir, tmp_path, monkeypatch,
                                                                  how, code):
    short_replies()
    (tmp_path / "sitecustomize.py").write_text(BLOCKED_SHUTDOWN)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    db = data_dir() / "llm-tui.sqlite3"
    app = TerminalApp(str(tiny_model_dir))
    try:
        first_turn(app, db, "keep this")
        shown = len(app.output)
        took = app.end_with("\x11" if how == "ctrl+q" else signal.SIGHUP)
        print(f"{how} with Textual's shutdown blocked: ended after {took:.2f} s")
        assert app.process.returncode == code
        assert took < 3.5
        assert user_messages(db) == ["keep this"]
        time.sleep(0.2)  # the last output reaches the reader
        assert b"\x1b[?1049l" in app.output[shown:]  # the terminal is given back: the main screen again
    finally:
        app.close()
