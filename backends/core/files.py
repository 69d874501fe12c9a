"""Reading a checkpoint's JSON files: {} when absent, one clear error when broken."""

from __future__ import annotations

import json
from pathlib import Path

from backends.core.errors import ModelLoadError


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; {} when the file is absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path} is not valid JSON ({err})",
                             "re-download the checkpoint or fix the file") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} does not hold a JSON object",
                             "re-download the checkpoint or fix the file")
    return data
