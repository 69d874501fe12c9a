"""Start the full-screen app from the parsed command line, and end the process promptly after it."""

from __future__ import annotations

import os
import sys
import threading
import time

from . import terminal_input
from .app import LlmTuiApp
from .settings import AppSettings, load_config

#: How long a generation may take to notice it was stopped once the app has closed.
EXIT_GRACE_SECONDS = 2.0


def launch_app(args) -> int:
    """Run the app until it exits; returns the process exit code (the process may end here)."""
    settings = AppSettings.from_args(args)
    config = load_config()  # a broken config stops here with one clear line
    if config is not None:
        for warning in config.warnings:
            print(f"llm-tui: warning: {warning}", file=sys.stderr)
    terminal_input.install()
    app = LlmTuiApp(settings, config=config)
    try:
        app.run()
    finally:
        app.save_on_exit()  # after a crash too: the partial reply is kept
    if app.tracebacks:
        print("\n".join(app.tracebacks), file=sys.stderr)
    code = app.return_code or 0
    end_promptly(code)
    return code


def _still_working() -> list[threading.Thread]:
    """Threads that would keep the process alive or busy: Textual's workers and generation threads."""
    main = threading.main_thread()
    return [t for t in threading.enumerate()
            if t is not main and t.is_alive() and (not t.daemon or t.name == "llm-tui-generate")]


def end_promptly(code: int) -> None:
    """Everything is saved: give a stopped generation a moment to end, then end the process even
    if a thread is stuck inside native code (a long forward call cannot be interrupted)."""
    deadline = time.monotonic() + EXIT_GRACE_SECONDS
    while _still_working() and time.monotonic() < deadline:
        time.sleep(0.05)
    if _still_working():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
