"""Free memory of each device: available RAM for the CPU, torch or NVML for GPUs, with --max-memory caps."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from backends.hardware.sampling import visible_handles

# -- free memory ----------------------------------------------------------------


@dataclass(frozen=True)
class DeviceMemory:
    device: str  # "cpu", "cuda:0", ...
    free: int
    total: int
    limit: int | None = None  # a --max-memory cap

    @property
    def usable(self) -> int:
        return min(self.free, self.limit) if self.limit is not None else self.free


def cpu_memory() -> DeviceMemory:
    import psutil

    ram = psutil.virtual_memory()
    return DeviceMemory("cpu", int(ram.available), int(ram.total))


def gpu_memory(index: int) -> DeviceMemory | None:
    """Free and total bytes of visible CUDA device ``index``: torch if CUDA is up, else NVML, else torch."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is not None and cuda.is_initialized():
            free, total = cuda.mem_get_info(index)
            free += max(cuda.memory_reserved(index) - cuda.memory_allocated(index), 0)  # reusable in-process
            return DeviceMemory(f"cuda:{index}", int(free), int(total))
    except Exception:
        pass
    from_nvml = _nvml_memory(index)
    if from_nvml is not None:
        return from_nvml
    try:
        import torch as _torch

        if _torch.cuda.is_available() and index < _torch.cuda.device_count():
            free, total = _torch.cuda.mem_get_info(index)
            return DeviceMemory(f"cuda:{index}", int(free), int(total))
    except Exception:
        pass
    return None


def _nvml_memory(index: int) -> DeviceMemory | None:
    try:
        import pynvml


        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        handles = visible_handles(pynvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
        for position, handle in handles:
            if position == index:
                info = pynvml.nvmlDeviceGetMemoryInfo(handle)
                return DeviceMemory(f"cuda:{index}", int(info.free), int(info.total))
        return None
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def devices_memory(devices: list[str], limits: dict | None = None) -> list[DeviceMemory]:
    """Free memory of each named device ("cpu", "cuda:N"), with --max-memory caps applied."""
    limits = limits or {}
    out = []
    for device in devices:
        if device == "cpu":
            info = cpu_memory()
            cap = limits.get("cpu")
        elif device.startswith("cuda:"):
            index = int(device[5:])
            info = gpu_memory(index)
            cap = limits.get(index, limits.get(device))
        else:
            continue
        if info is None:
            continue
        if cap is not None:
            info = DeviceMemory(info.device, info.free, info.total, int(cap))
        out.append(info)
    return out
