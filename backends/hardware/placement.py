"""Where the weights may go: --device-map and --max-memory as from_pretrained and accelerate want them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from backends.core.errors import ModelLoadError, UsageError
from backends.core.spec import ModelSpec
from backends.core.units import parse_size
from backends.hardware.free_memory import cpu_memory, gpu_memory


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


def visible_gpus() -> int:
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
    count = visible_gpus()
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
    info = gpu_memory(index)
    return int(info.free * 0.9) if info is not None else 0


def _cpu_budget() -> int:
    return int(cpu_memory().free * 0.9)


def resolve_device_map(spec: ModelSpec) -> str | dict | None:
    return placement(spec).device_map


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
