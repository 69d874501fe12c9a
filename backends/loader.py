"""Find a model from a ModelSpec and load it with transformers.

Nothing here talks to a model hub: Hugging Face ids are resolved from the
local cache only, and the hub client is switched to offline mode before
transformers is imported.
"""

from __future__ import annotations

import gc
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import MissingPackageError, ModelLoadError, RemoteCodeRefused, UsageError
from .spec import ModelSpec

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

Progress = Callable[[str, "float | None"], None]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


@dataclass(frozen=True)
class Located:
    """Where a model's files are: a directory, and a GGUF file inside it if any."""

    path: Path
    gguf_file: str | None = None


def locate(spec: ModelSpec, progress: Progress | None = None) -> Located:
    """Resolve the spec's source to local files, or raise one clear error."""
    if spec.is_default:
        from .demo import ensure_demo

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


def remote_code_files(path: Path) -> list[Path]:
    """The .py files a checkpoint would run with trust_remote_code."""
    from .families.detect import needs_remote_code

    return needs_remote_code(path)


def require_consent(path: Path, spec: ModelSpec) -> None:
    files = remote_code_files(path)
    if files and not spec.trust_remote_code:
        names = ", ".join(p.name for p in files)
        raise RemoteCodeRefused(f"'{path.name}' needs to run its own Python code ({names})",
                                "read those files, then pass --trust-remote-code to allow it")


def resolve_device_map(spec: ModelSpec) -> str | dict | None:
    import torch

    if spec.device_map == "auto":
        return "auto" if torch.cuda.is_available() else "cpu"
    if spec.device_map == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise ModelLoadError(f"--device-map {spec.device_map} asks for a GPU, but no CUDA device is visible",
                             "use --device-map cpu (or auto), or run on a machine with an NVIDIA GPU")
    devices = [d if d.startswith(("cuda", "cpu")) else f"cuda:{d}" for d in spec.device_map.split(",")]
    if len(devices) == 1:
        return devices[0]
    return "auto"  # spread across the listed GPUs via max_memory below


def resolve_dtype(spec: ModelSpec, on_gpu: bool):
    import torch

    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if spec.dtype != "auto":
        return table[spec.dtype]
    if on_gpu:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPU kernels for half types are slow or missing


def quantization_config(spec: ModelSpec, compute_dtype):
    if spec.quant in ("nf4", "fp4", "int8"):
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise MissingPackageError("bitsandbytes", f"--quant {spec.quant}", extra="bnb")
        from transformers import BitsAndBytesConfig

        if spec.quant == "int8":
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec.quant,
                                  bnb_4bit_compute_dtype=compute_dtype)
    return None


@dataclass
class Loaded:
    model: object
    tokenizer: object
    located: Located
    device: str
    dtype: str


def load(spec: ModelSpec, progress: Progress | None = None) -> Loaded:
    """Load tokenizer and weights; every failure becomes one ModelLoadError line."""
    progress = progress or (lambda message, fraction=None: None)
    located = locate(spec, progress)
    require_consent(located.path, spec)
    progress(f"loading {spec.label}", None)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    device_map = resolve_device_map(spec)
    on_gpu = device_map != "cpu"
    dtype = resolve_dtype(spec, on_gpu)
    kwargs: dict = {"dtype": dtype, "device_map": device_map, "trust_remote_code": spec.trust_remote_code}
    if located.gguf_file:
        kwargs["gguf_file"] = located.gguf_file
    quant = quantization_config(spec, dtype)
    if quant is not None:
        kwargs["quantization_config"] = quant
    if spec.max_memory:
        kwargs["max_memory"] = parse_max_memory(spec.max_memory)
    folder = str(located.path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            folder, trust_remote_code=spec.trust_remote_code,
            **({"gguf_file": located.gguf_file} if located.gguf_file else {}))
    except Exception as err:
        raise ModelLoadError(f"could not load the tokenizer from '{folder}': {_first_line(err)}",
                             "check that the directory has tokenizer files (tokenizer.json or tokenizer.model)") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except torch.OutOfMemoryError:
        gc.collect()
        raise ModelLoadError(f"out of memory while loading '{spec.label}'",
                             "try --quant nf4 or int8, a smaller --dtype, or another --device-map") from None
    except (ModelLoadError, MissingPackageError, UsageError):
        raise
    except ImportError as err:
        raise ModelLoadError(f"loading '{spec.label}' needs a package that is missing: {_first_line(err)}",
                             "install the package named above") from None
    except Exception as err:
        raise ModelLoadError(f"could not load the weights of '{spec.label}': {_first_line(err)}",
                             "the checkpoint may be corrupt or truncated: re-download or re-convert it") from None
    model.eval()
    return Loaded(model, tokenizer, located, device=describe_device(model), dtype=str(dtype).replace("torch.", ""))


def parse_max_memory(text: str) -> dict:
    out: dict = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if not value:
            raise UsageError(f"--max-memory '{text}' is not understood", "use e.g. 0=20GiB,1=20GiB,cpu=64GiB")
        key = key.strip()
        out[int(key) if key.isdigit() else key] = value.strip()
    return out


def describe_device(model) -> str:
    mapping = getattr(model, "hf_device_map", None)
    if mapping:
        devices = sorted({str(d) if not isinstance(d, int) else f"cuda:{d}" for d in mapping.values()})
        return ",".join(devices)
    try:
        return str(next(model.parameters()).device)
    except StopIteration:
        return "cpu"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def release_memory() -> None:
    """Give freed tensors back: Python garbage, the CUDA cache, and the C heap."""
    gc.collect()
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
