"""Find a model from a ModelSpec and load it with transformers.

Nothing here talks to a model hub: Hugging Face ids are resolved from the
local cache only, and the hub client is switched to offline mode before
transformers is imported.

``load()`` places the weights (``placement``: --device-map and --max-memory
as accelerate wants them), picks the dtype, asks ``backends.quant`` how
``--quant`` applies to the checkpoint, asks ``backends.memory`` whether it
fits, and turns every failure, running out of memory included, into one
line; ``release_memory()`` gives memory back after an unload or a failure.
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


@dataclass(frozen=True)
class Placement:
    """Where the weights may go, as from_pretrained and accelerate want it."""

    #: "cpu", "cuda:N", "mps", or "auto" (accelerate spreads the layers over ``max_memory``'s devices).
    device_map: str
    #: accelerate's per-device budget in bytes (GPU index or "cpu"), or None for its own choice.
    max_memory: dict | None
    #: The devices the weights may be placed on ("cpu" only when nothing else is).
    devices: tuple[str, ...]
    #: Parsed --max-memory caps, in bytes.
    limits: dict
    #: CUDA devices this process sees (after CUDA_VISIBLE_DEVICES).
    visible_gpus: int = 0

    @property
    def on_gpu(self) -> bool:
        return any(d.startswith("cuda") for d in self.devices)

    @property
    def offload_to_cpu(self) -> bool:
        """accelerate may put what does not fit on the GPUs into CPU RAM."""
        return self.device_map == "auto" and self.on_gpu and (not self.max_memory or "cpu" in self.max_memory)


def _visible_gpus() -> int:
    import torch

    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def _no_gpu_error(device_map: str) -> ModelLoadError:
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    why = f" (CUDA_VISIBLE_DEVICES={hidden!r})" if hidden is not None else ""
    return ModelLoadError(f"--device-map {device_map} asks for a GPU, but no CUDA device is visible{why}",
                          "use --device-map cpu (or auto), or run on a machine with an NVIDIA GPU")


def placement(spec: ModelSpec) -> Placement:
    """Turn --device-map and --max-memory into from_pretrained's device_map and max_memory.

    ``auto`` spreads the model over every visible GPU (CUDA_VISIBLE_DEVICES
    decides which are visible), or uses the CPU when there is none. A list
    such as ``cuda:0,cuda:1`` restricts placement to those GPUs through
    accelerate's max_memory (add ``cpu`` to the list to allow offloading).
    """
    limits = parse_max_memory(spec.max_memory) if spec.max_memory else {}
    count = _visible_gpus()
    wanted = spec.device_map.strip()
    if wanted == "cpu" or (wanted == "auto" and count == 0):
        return Placement("cpu", None, ("cpu",), limits, count)
    if wanted == "auto":
        return Placement("auto", dict(limits) or None, tuple(f"cuda:{i}" for i in range(count)), limits, count)
    devices: list[str] = []
    for part in (p.strip() for p in wanted.split(",") if p.strip()):
        device = f"cuda:{part}" if part.isdigit() else part
        if device.startswith("cuda"):
            if count == 0:
                raise _no_gpu_error(wanted)
            index = int(device.split(":")[1]) if ":" in device else 0
            if index >= count:
                raise ModelLoadError(f"--device-map {wanted} names cuda:{index}, but only {count} GPU"
                                     f"{'s are' if count > 1 else ' is'} visible",
                                     f"use cuda:0 to cuda:{count - 1}, or --device-map auto")
            device = f"cuda:{index}"
        elif device == "mps":
            import torch

            if not torch.backends.mps.is_available():
                raise ModelLoadError("--device-map mps asks for Apple's GPU, which is not available here",
                                     "use --device-map cpu or auto")
        if device not in devices:
            devices.append(device)
    if len(devices) == 1:
        return Placement(devices[0], None, (devices[0],), limits, count)
    budget: dict = {}
    for device in devices:
        if device.startswith("cuda:"):
            index = int(device[5:])
            budget[index] = limits.get(index) or _gpu_budget(index)
        elif device == "cpu":
            budget["cpu"] = limits.get("cpu") or _cpu_budget()
    gpus = tuple(d for d in devices if d.startswith("cuda"))
    return Placement("auto", budget, gpus or tuple(devices), limits, count)


def _gpu_budget(index: int) -> int:
    from .memory import gpu_memory

    info = gpu_memory(index)
    return int(info.free * 0.9) if info is not None else 0


def _cpu_budget() -> int:
    from .memory import cpu_memory

    return int(cpu_memory().free * 0.9)


def resolve_device_map(spec: ModelSpec) -> str | dict | None:
    return placement(spec).device_map


def resolve_dtype(spec: ModelSpec, on_gpu: bool, checkpoint=None):
    """The load dtype: the spec's, or for ``auto`` bf16 on GPUs that support it (fp16 otherwise,
    and for GPTQ/AWQ checkpoints, whose kernels want fp16), fp32 on the CPU."""
    import torch

    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if spec.dtype != "auto":
        return table[spec.dtype]
    if on_gpu:
        if checkpoint is not None and getattr(checkpoint, "method", None) in ("gptq", "awq"):
            return torch.float16
        return torch.bfloat16 if _bf16_supported() else torch.float16
    return torch.float32  # CPU kernels for half types are slow or missing


def _bf16_supported() -> bool:
    import torch

    try:
        return all(torch.cuda.get_device_capability(i)[0] >= 8 for i in range(torch.cuda.device_count()))
    except Exception:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


@dataclass
class Loaded:
    model: object
    tokenizer: object
    located: Located
    device: str
    dtype: str
    #: Short quantization label: "none", "nf4", "int8", "gptq-4bit" ...
    quant: str = "none"
    #: The pre-load memory verdict (None when it could not be estimated).
    memory: object | None = None


def load(spec: ModelSpec, progress: Progress | None = None) -> Loaded:
    """Load tokenizer and weights; every failure becomes one ModelLoadError line.

    Before the weights are read, the memory they need is compared with what
    is free (backends.memory.check_before_load): a load that cannot fit is
    refused with the numbers, one that is tight is reported through
    ``progress``. Running out of memory anyway releases what was allocated
    and says what to change.
    """
    progress = progress or (lambda message, fraction=None: None)
    located = locate(spec, progress)
    require_consent(located.path, spec)
    progress(f"loading {spec.label}", None)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .quant import checkpoint_quantization, plan_quantization

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    place = placement(spec)
    existing = checkpoint_quantization(located.path, located.gguf_file)
    dtype = resolve_dtype(spec, place.on_gpu, existing)
    plan = plan_quantization(spec, located, dtype, on_gpu=place.on_gpu)
    verdict = _memory_verdict(spec, located, dtype, plan)
    if verdict is not None:
        verdict.raise_if_refused()
        if verdict.level == "warn":
            progress(verdict.line, None)
    kwargs: dict = {"dtype": dtype, "device_map": place.device_map, "trust_remote_code": spec.trust_remote_code}
    if located.gguf_file:
        kwargs["gguf_file"] = located.gguf_file
    if plan.config is not None:
        kwargs["quantization_config"] = plan.config
    if place.max_memory:
        kwargs["max_memory"] = place.max_memory
    folder = str(located.path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            folder, trust_remote_code=spec.trust_remote_code,
            **({"gguf_file": located.gguf_file} if located.gguf_file else {}))
    except Exception as err:
        raise ModelLoadError(f"could not load the tokenizer from '{folder}': {_first_line(err)}",
                             "check that the directory has tokenizer files (tokenizer.json or tokenizer.model)") from None
    failure: tuple[str, str] | None = None
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (ModelLoadError, MissingPackageError, UsageError):
        raise
    except Exception as err:
        failure = _load_failure(err, spec, plan, verdict, place.on_gpu)
    if failure is not None:
        # Outside the except block: the traceback and the half-built model are gone,
        # so their memory can really be returned.
        release_memory()
        raise ModelLoadError(*failure)
    model.eval()
    return Loaded(model, tokenizer, located, device=describe_device(model),
                  dtype=str(dtype).replace("torch.", ""), quant=plan.label, memory=verdict)


def _memory_verdict(spec, located, dtype, plan):
    """The pre-load check; an estimate that cannot be made never blocks a load."""
    from .memory import check_before_load

    try:
        return check_before_load(spec, located, dtype=dtype, plan=plan)
    except Exception:
        return None


def _load_failure(err: BaseException, spec: ModelSpec, plan, verdict, on_gpu: bool) -> tuple[str, str]:
    """(problem, fix) for a failed from_pretrained: out of memory, quantization kernels, packages, the rest."""
    from .memory import is_out_of_memory, oom_advice
    from .quant import explain_error

    if is_out_of_memory(err):
        numbers = ""
        if verdict is not None and verdict.free_bytes is not None:
            from .telemetry import format_bytes

            numbers = (f" (needs ~{format_bytes(verdict.needed_bytes)}, {format_bytes(verdict.free_bytes)} "
                       f"was free on {','.join(verdict.devices)})")
        return f"out of memory while loading '{spec.label}'{numbers}", oom_advice(plan, on_gpu, spec)
    explained = explain_error(err, plan, on_gpu)
    if explained is not None:
        return explained
    if isinstance(err, ImportError):
        return (f"loading '{spec.label}' needs a package that is missing: {_first_line(err)}",
                "install the package named above")
    return (f"could not load the weights of '{spec.label}': {_first_line(err)}",
            "the checkpoint may be corrupt or truncated: re-download or re-convert it")


_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
               "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_size(text: str) -> int:
    """'20GiB', '20GB', '1.5G', '512MiB', '1024' -> bytes (G/GiB are binary, GB decimal)."""
    value = str(text).strip().replace(" ", "")
    digits = value.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    unit = value[len(digits):].lower()
    if unit not in _SIZE_UNITS or not digits:
        raise ValueError(value)
    number = float(digits)
    if number < 0:
        raise ValueError(value)
    return int(number * _SIZE_UNITS[unit])


def parse_max_memory(text: str) -> dict:
    """'0=20GiB,1=20GiB,cpu=64GiB' -> {0: bytes, 1: bytes, "cpu": bytes} (``cuda:N`` keys work too)."""
    out: dict = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if key.startswith("cuda:"):
            key = key[5:]
        if not value or not (key.isdigit() or key in ("cpu", "mps", "disk")):
            raise UsageError(f"--max-memory '{text}' is not understood", "use e.g. 0=20GiB,1=20GiB,cpu=64GiB")
        try:
            size = parse_size(value)
        except ValueError:
            raise UsageError(f"--max-memory '{text}': '{value.strip()}' is not a size",
                             "write sizes like 20GiB, 512MiB or 24GB") from None
        out[int(key) if key.isdigit() else key] = size
    return out


def describe_device(model) -> str:
    """Where a model's weights are: "cpu", "cuda:0", or "cuda:0,cuda:1" (",cpu"/",disk" when offloaded)."""
    mapping = getattr(model, "hf_device_map", None)
    if mapping:
        found = set()
        for value in mapping.values():
            text = f"cuda:{value}" if isinstance(value, int) else str(value)
            found.add("cuda:0" if text == "cuda" else text)
        order = {"cpu": 1, "disk": 2}

        def key(name: str):
            if name.startswith("cuda:") and name[5:].isdigit():
                return (0, int(name[5:]), name)
            return (order.get(name, 3), 0, name)

        return ",".join(sorted(found, key=key))
    try:
        return str(next(model.parameters()).device)
    except StopIteration:
        return "cpu"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def release_memory(err: BaseException | None = None) -> int:
    """Give freed memory back: Python garbage, the CUDA cache, and the C heap.

    Pass the exception that interrupted a load or a turn as ``err``: its
    traceback's frames still hold the tensors they were working on, and are
    cleared first. Returns the process RSS afterwards, in bytes.
    """
    if err is not None:
        import traceback

        traceback.clear_frames(err.__traceback__)
        err.__traceback__ = None
    gc.collect()
    import sys

    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is not None and cuda.is_initialized():
            cuda.synchronize()
            cuda.empty_cache()
            cuda.ipc_collect()
    except Exception:
        pass
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return 0
