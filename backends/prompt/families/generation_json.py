"""generation_config.json as the prompt families read it (stop tokens, Qwen's window and chat
format, Baichuan2's role tokens).

A file that is not JSON is left out with a note the family adds to every view's warnings, so
the model still loads and the inspector and ``inspect`` say what was lost; loading the weights
says the same once (``backends.loading.generation_config``).
"""

from __future__ import annotations

from pathlib import Path

from backends.core.errors import ModelLoadError
from backends.core.files import read_json


def read_generation_json(model_dir: Path) -> tuple[dict, str | None]:
    """``(settings, note)``: the file's JSON object ({} when absent) and None, or {} and one line
    saying it was left out."""
    try:
        return read_json(Path(model_dir) / "generation_config.json"), None
    except ModelLoadError as err:
        return {}, f"{err.problem}: left out, so its stop tokens and settings are not used"
