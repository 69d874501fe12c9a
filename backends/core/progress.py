"""The progress callback slow steps report to: ``progress(message, fraction or None)``."""

from __future__ import annotations

from typing import Callable

Progress = Callable[[str, "float | None"], None]
