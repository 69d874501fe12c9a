"""Which of a checkpoint's own Python files ``trust_remote_code`` would run, and which model class it names.

Only the files are read; nothing in the directory is executed."""

from __future__ import annotations

import os
import re
from pathlib import Path

from backends.checkpoint.locate import Located
from backends.core.files import read_json

# -- remote code ---------------------------------------------------------------
_RELATIVE_IMPORT = (re.compile(r"^\s*import\s+\.(\S+)\s*$", re.MULTILINE),
                    re.compile(r"^\s*from\s+\.(\S+)\s+import", re.MULTILINE))


def needs_remote_code(model_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint's own .py files that ``trust_remote_code=True`` would execute.

    Follows ``auto_map`` in config.json, tokenizer_config.json and the processor
    configs, then the relative imports of those files. Classes that ``auto_map``
    takes from another repository (``repo--module.Class``) are not in the
    directory and are not listed.
    """
    root = Path(model_dir)
    maps = [read_json(root / name).get("auto_map") for name in
            ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json",
             "feature_extractor_config.json")]
    modules: list[str] = []
    for auto_map in maps:
        if not isinstance(auto_map, dict):
            continue
        for value in auto_map.values():
            for ref in value if isinstance(value, list) else [value]:
                if isinstance(ref, str) and "--" not in ref and "." in ref:
                    modules.append(ref.rsplit(".", 1)[0])
    found: list[Path] = []
    queue = list(modules)
    while queue:
        module = queue.pop(0)
        path = root / (module.replace(".", "/") + ".py")
        if path in found or not path.is_file():
            continue
        found.append(path)
        text = path.read_text(encoding="utf-8", errors="replace")
        base = module.rsplit(".", 1)[0] + "." if "." in module else ""
        for pattern in _RELATIVE_IMPORT:
            queue.extend(base + name for name in pattern.findall(text))
    return sorted(found)
#: auto_map keys that name a model class a chat turn can run, in order of preference.
_MODEL_KEYS = ("AutoModelForCausalLM", "AutoModel")


def model_class_ref(path: Path) -> str | None:
    """The checkpoint's own model class (``module.Class``) from config.json ``auto_map``, if it ships one."""
    auto_map = read_json(Path(path) / "config.json").get("auto_map")
    if not isinstance(auto_map, dict):
        return None
    for key in _MODEL_KEYS:
        ref = auto_map.get(key)
        if isinstance(ref, list):
            ref = next((r for r in ref if isinstance(r, str)), None)
        if isinstance(ref, str) and "--" not in ref and (Path(path) / (ref.rsplit(".", 1)[0] + ".py")).is_file():
            return ref
    return None


def is_remote_model(located: Located) -> bool:
    """True when the weights load through the checkpoint's own Python code."""
    return located.gguf_file is None and model_class_ref(located.path) is not None
