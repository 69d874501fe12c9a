"""Start the full-screen app from the parsed command line."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from .models import LoadOptions


@dataclass(frozen=True)
class AppSettings:
    """Everything the app needs from the command line (and tests)."""

    models: list[str] = field(default_factory=list)  # MODEL arguments; empty: the default model
    options: LoadOptions = field(default_factory=LoadOptions)
    system: str | None = None
    keep_loaded: bool = False
    resume: str | None = None  # "latest" or a conversation id
    debug: bool = False
    store_path: str | None = None  # None: the data folder's database
    #: Snapshots and benchmarks: no cursor blink, no meter sampling, no config theme.
    frozen: bool = False

    @classmethod
    def from_args(cls, args) -> "AppSettings":
        return cls(models=list(getattr(args, "models", None) or []), options=LoadOptions.from_args(args),
                   system=getattr(args, "system", None), keep_loaded=bool(getattr(args, "keep_loaded", False)),
                   resume=getattr(args, "resume", None), debug=bool(getattr(args, "debug", False)))


def launch_app(args) -> int:
    """Run the app until it exits; returns the process exit code."""
    settings = AppSettings.from_args(args)
    from .models import load_config

    config = load_config()  # a broken config stops here with one clear line
    if config is not None:
        for warning in config.warnings:
            print(f"llm-tui: warning: {warning}", file=sys.stderr)
    from .app import LlmTuiApp

    app = LlmTuiApp(settings, config=config)
    try:
        app.run()
    finally:
        app.save_on_exit()  # after a crash too: the partial reply is kept
    if app.tracebacks:
        print("\n".join(app.tracebacks), file=sys.stderr)
    return app.return_code or 0
