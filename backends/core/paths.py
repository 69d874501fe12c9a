"""Where llm-tui keeps its files: data, config and cache folders.

Each folder comes from platformdirs and can be moved with an environment
variable, so tests and users can run isolated copies side by side.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "llm-tui"

DATA_DIR_ENV = "LLM_TUI_DATA_DIR"
CONFIG_DIR_ENV = "LLM_TUI_CONFIG_DIR"
CACHE_DIR_ENV = "LLM_TUI_CACHE_DIR"


def _from_env(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """Conversations database and other things worth keeping."""
    return _from_env(DATA_DIR_ENV) or Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    """``config.toml``."""
    return _from_env(CONFIG_DIR_ENV) or Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Things that can be rebuilt, such as the converted default model."""
    return _from_env(CACHE_DIR_ENV) or Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))

