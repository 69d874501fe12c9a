"""A checkpoint's generation_config.json as transformers reads it, for the model it is loaded with.

The file holds the checkpoint's stop tokens (``eos_token_id``) and sampling defaults; the
engines that run the model's own ``generate()`` or ``chat()`` take them from the model's
``generation_config``. transformers drops a file that is not JSON without a word, and one
it refuses (a value of the wrong type) fails the whole load with an error that blames the
weights. Here either one is one warning line (``unloadable``), and the load goes on without it.
"""

from __future__ import annotations

from pathlib import Path

from backends.core.errors import WARNING, error_line
from backends.core.files import read_json


def read_generation_config(path: Path):
    """``(config, None)`` when the file loads, ``(None, None)`` when there is none, ``(None, why)``
    when it does not load."""
    if not (Path(path) / "generation_config.json").is_file():
        return None, None
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(str(path), local_files_only=True), None
    except Exception as err:  # not JSON, not an object, a value transformers refuses
        return None, error_line(err)


def unloadable(label: str, why: str) -> str:
    """The warning line for a generation_config.json that does not load."""
    return (f"{WARNING}the generation_config.json of '{label}' does not load ({why}): going on without it, "
            "so its stop tokens and sampling defaults are not used")


def fallback_generation_config(path: Path):
    """What transformers builds for a checkpoint without generation_config.json: the generation
    settings config.json states (its bos/eos/pad IDs among them)."""
    from transformers import GenerationConfig

    return GenerationConfig.from_model_config(read_json(Path(path) / "config.json"))
