"""Find a model's files from a ModelSpec: a directory, a GGUF file, the local HF cache, the default model.

Nothing here talks to a model hub: Hugging Face ids are resolved from the
local cache only."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from backends.checkpoint.demo import ensure_demo
from backends.core.errors import ModelLoadError
from backends.core.progress import Progress
from backends.core.spec import ModelSpec

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


@dataclass(frozen=True)
class Located:
    """Where a model's files are: a directory, and a GGUF file inside it if any."""

    path: Path
    gguf_file: str | None = None


def locate(spec: ModelSpec, progress: Progress | None = None) -> Located:
    """Resolve the spec's source to local files, or raise one clear error."""
    if spec.is_default:
        return Located(ensure_demo(progress))
    source = str(spec.source)
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            return Located(path.parent, path.name)
        raise ModelLoadError(f"'{source}' is a file, not a model directory",
                             "give the directory that holds config.json (or a .gguf file)")
    if path.is_dir():
        check_model_dir(path)
        return Located(path)
    cached = _from_hf_cache(source)
    if cached is not None:
        return Located(cached)
    looks_like_path = source.startswith((".", "/", "~")) or os.sep in source and source.count("/") != 1
    if looks_like_path:
        raise ModelLoadError(f"model path '{source}' does not exist", "check the path, or run 'llm-tui models' to list what can be loaded")
    raise ModelLoadError(f"'{source}' is not a directory, a config alias, or a model in the local Hugging Face cache",
                         "llm-tui never downloads models: give a local path, or run 'llm-tui models' to list what can be loaded")


def check_model_dir(path: Path) -> None:
    if not (path / "config.json").is_file():
        gguf = sorted(path.glob("*.gguf"))
        hint = f"; to load a GGUF file give its path, e.g. {gguf[0]}" if gguf else ""
        raise ModelLoadError(f"'{path}' is not a model directory (no config.json)",
                             "give the directory of a Hugging Face checkpoint" + hint)
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"'{path / 'config.json'}' is not valid JSON ({err})",
                             "restore the checkpoint's config.json") from None


def _from_hf_cache(repo_id: str) -> Path | None:
    if repo_id.count("/") != 1:
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None
