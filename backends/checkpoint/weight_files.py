"""A checkpoint's weight files: strictly for loading (missing shards are errors), leniently for estimates."""

from __future__ import annotations

import json
from pathlib import Path

from backends.core.errors import ModelLoadError


def listed_weight_files(path: Path, suffix: str) -> list[Path]:
    for index in (f"model{suffix}.index.json", f"pytorch_model{suffix}.index.json"):
        if (path / index).is_file():
            try:
                names = set(json.loads((path / index).read_text())["weight_map"].values())
                return sorted(path / n for n in names if (path / n).is_file())
            except (OSError, ValueError, KeyError):
                break
    files = sorted(path.glob(f"*{suffix}"))
    if suffix == ".safetensors":
        preferred = [f for f in files if f.name.startswith("model")]
        return preferred or [f for f in files if not f.name.startswith("consolidated")] or files
    return files
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE = ("model.safetensors", "pytorch_model.bin")


# -- weights ---------------------------------------------------------------------
def weight_files(path: Path) -> list[Path]:
    """The checkpoint's weight files: an index's shards, one file, or every safetensors file."""
    path = Path(path)
    for name in _INDEXES:
        index = path / name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise ModelLoadError(f"'{index}' is not a valid weight index ({err})",
                                     "restore the checkpoint's index file") from None
            shards = sorted(set(weight_map.values()))
            absent = [s for s in shards if not (path / s).is_file()]
            if absent:
                raise ModelLoadError(f"'{path.name}' is missing weight shard(s): {', '.join(absent[:3])}",
                                     "finish downloading the checkpoint")
            return [path / s for s in shards]
    for name in _SINGLE:
        if (path / name).is_file():
            return [path / name]
    found = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if found:
        return found
    raise ModelLoadError(f"'{path}' has no weights (model.safetensors, pytorch_model.bin or an index)",
                         "point at the directory that holds the checkpoint's weight files")
