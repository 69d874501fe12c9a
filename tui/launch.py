"""Start the full-screen app from the parsed command line."""

from __future__ import annotations

import sys

from .app import LlmTuiApp
from .settings import AppSettings, load_config


def launch_app(args) -> int:
    """Run the app until it exits; returns the process exit code."""
    settings = AppSettings.from_args(args)
    config = load_config()  # a broken config stops here with one clear line
    if config is not None:
        for warning in config.warnings:
            print(f"llm-tui: warning: {warning}", file=sys.stderr)
    app = LlmTuiApp(settings, config=config)
    try:
        app.run()
    finally:
        app.save_on_exit()  # after a crash too: the partial reply is kept
    if app.tracebacks:
        print("\n".join(app.tracebacks), file=sys.stderr)
    return app.return_code or 0
