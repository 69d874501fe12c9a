"""Shared set-up for benchmarks: repo on sys.path, the tiny-model builder from the tests."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from conftest import build_tiny_model  # noqa: E402  (the same tiny models the tests use)

__all__ = ["ROOT", "build_tiny_model"]
