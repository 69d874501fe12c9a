"""Sampling the machine: NVML for NVIDIA GPUs (this process's share too), torch's allocator, psutil for CPU and RAM."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import asdict, dataclass

import psutil


@dataclass(frozen=True)
class GpuSample:
    #: The CUDA ordinal this process sees (``cuda:<index>``), after CUDA_VISIBLE_DEVICES.
    index: int
    name: str
    util_percent: float | None
    mem_used: int  # bytes, all processes
    mem_total: int
    #: Bytes this process holds on the device, from NVML's running processes;
    #: ``None`` when NVML does not list this process (for example in a container).
    process_mem: int | None


@dataclass(frozen=True)
class Sample:
    t: float  # time.monotonic()
    gpus: tuple[GpuSample, ...]
    torch_allocated: int | None  # summed over visible CUDA devices
    torch_reserved: int | None
    torch_peak: int | None
    rss: int
    sys_ram_used: int
    sys_ram_total: int
    cpu_percent: float  # this process; 100 means one full core

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    @property
    def gpu_mem_used(self) -> int:
        return sum(g.mem_used for g in self.gpus)

    @property
    def gpu_mem_total(self) -> int:
        return sum(g.mem_total for g in self.gpus)

    @property
    def process_gpu_mem(self) -> int | None:
        """This process's memory over all GPUs, or ``None`` if no GPU knows it."""
        known = [g.process_mem for g in self.gpus if g.process_mem is not None]
        return sum(known) if known else None

    def to_json(self) -> dict:
        return asdict(self)


class Sampler:
    """Takes Samples. NVML is opened on first use and any failure means "no GPUs"."""

    def __init__(self, use_nvml: bool = True) -> None:
        self._use_nvml = use_nvml
        self._lock = threading.Lock()
        self._nvml = None  # the pynvml module once initialised
        self._handles: list[tuple[int, object]] = []
        self._nvml_tried = False
        self._gpu_status = ""
        self._process = psutil.Process()
        self._pid = self._process.pid
        # psutil's first non-blocking cpu_percent() is always 0.0; prime it here.
        self._process.cpu_percent(interval=None)

    @property
    def gpu_status(self) -> str:
        """One line: which GPUs are sampled, or why none are."""
        with self._lock:
            self._ensure_nvml()
            return self._gpu_status

    def sample(self) -> Sample:
        with self._lock:
            self._ensure_nvml()
            gpus = self._sample_gpus()
        allocated, reserved, peak = torch_memory()
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_percent(interval=None)
        ram = psutil.virtual_memory()
        return Sample(
            t=time.monotonic(),
            gpus=gpus,
            torch_allocated=allocated,
            torch_reserved=reserved,
            torch_peak=peak,
            rss=rss,
            # "available" counts reclaimable page cache, so used = total - available
            # is the memory other programs really cannot get.
            sys_ram_used=ram.total - ram.available,
            sys_ram_total=ram.total,
            cpu_percent=cpu,
        )

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                _shutdown(self._nvml)
                self._gpu_status = "GPU sampling closed"
            self._nvml = None
            self._handles = []
            self._nvml_tried = True  # a closed sampler does not reopen NVML

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ensure_nvml(self) -> None:
        if self._nvml_tried:
            return
        self._nvml_tried = True
        if not self._use_nvml:
            self._gpu_status = "GPU sampling turned off"
            return
        try:
            import pynvml
        except ImportError:
            self._gpu_status = "no NVIDIA GPU: nvidia-ml-py is not installed"
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            self._gpu_status = nvml_reason(pynvml, err)
            return
        except Exception as err:  # ctypes or OS trouble while loading the library
            self._gpu_status = f"no NVIDIA GPU: NVML failed to start ({err})"
            return
        try:
            handles = visible_handles(pynvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
            names = sorted({_text(pynvml.nvmlDeviceGetName(h)) for _, h in handles})
        except pynvml.NVMLError as err:
            self._gpu_status = nvml_reason(pynvml, err)
            _shutdown(pynvml)
            return
        if not handles:
            _shutdown(pynvml)
            if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
                self._gpu_status = (f"no GPU visible: CUDA_VISIBLE_DEVICES="
                                    f"{os.environ['CUDA_VISIBLE_DEVICES']!r} hides every device")
            else:
                self._gpu_status = "no NVIDIA GPU: NVML found no devices"
            return
        self._nvml = pynvml
        self._handles = handles
        count = len(handles)
        self._gpu_status = f"{count} GPU{'s' if count > 1 else ''} via NVML: {', '.join(names)}"

    def _sample_gpus(self) -> tuple[GpuSample, ...]:
        nvml = self._nvml
        if nvml is None:
            return ()
        gpus = []
        try:
            for index, handle in self._handles:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                gpus.append(GpuSample(
                    index=index,
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    util_percent=_utilization(nvml, handle),
                    mem_used=int(memory.used),
                    mem_total=int(memory.total),
                    process_mem=_process_memory(nvml, handle, self._pid),
                ))
        except nvml.NVMLError as err:
            # A device that stops answering (driver reset, GPU fell off the bus)
            # ends GPU sampling for this sampler rather than failing every poll.
            self._gpu_status = f"GPU sampling stopped: {nvml_reason(nvml, err)}"
            _shutdown(nvml)
            self._nvml = None
            self._handles = []
            return ()
        return tuple(gpus)


def nvml_reason(nvml, err: Exception) -> str:
    """A one-line reason for an NVML failure."""
    code = getattr(err, "value", None)
    known = {
        "NVML_ERROR_LIBRARY_NOT_FOUND": "no NVIDIA GPU: NVML library not found",
        "NVML_ERROR_DRIVER_NOT_LOADED": "no NVIDIA GPU: the NVIDIA driver is not loaded",
        "NVML_ERROR_NO_PERMISSION": "no GPU data: no permission to query NVML",
        "NVML_ERROR_GPU_IS_LOST": "no GPU data: a GPU has fallen off the bus",
    }
    for name, reason in known.items():
        if code is not None and code == getattr(nvml, name, object()):
            return reason
    return f"no GPU data: NVML error: {err}"


def visible_handles(nvml, visible: str | None) -> list[tuple[int, object]]:
    """NVML handles in CUDA ordinal order, honouring CUDA_VISIBLE_DEVICES.

    Entries are indices or (prefixes of) GPU/MIG UUIDs; like CUDA, the list
    stops at the first entry that names no device. Indices follow NVML's
    order, which is CUDA's when CUDA_DEVICE_ORDER=PCI_BUS_ID.
    """
    count = nvml.nvmlDeviceGetCount()
    everything = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    if visible is None:
        return list(enumerate(everything))
    uuids = None
    chosen: list[tuple[int, object]] = []
    for entry in (part.strip() for part in visible.split(",")):
        handle = None
        if entry.isdigit():
            if int(entry) < count:
                handle = everything[int(entry)]
        elif entry:
            if uuids is None:
                uuids = [_text(nvml.nvmlDeviceGetUUID(h)) for h in everything]
            matches = [h for h, uuid in zip(everything, uuids) if uuid.startswith(entry)]
            if len(matches) == 1:
                handle = matches[0]
            elif not matches and entry.startswith("MIG-"):
                handle = _handle_by_uuid(nvml, entry)
        if handle is None:
            break
        chosen.append((len(chosen), handle))
    return chosen


def _handle_by_uuid(nvml, uuid: str):
    try:
        return nvml.nvmlDeviceGetHandleByUUID(uuid)
    except Exception:
        return None


def _utilization(nvml, handle) -> float | None:
    try:
        return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except nvml.NVMLError:  # not supported on MIG slices and some boards
        return None


def _process_memory(nvml, handle, pid: int) -> int | None:
    try:
        processes = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except nvml.NVMLError:
        return None
    used = [p.usedGpuMemory for p in processes if p.pid == pid]
    if not used or any(u is None for u in used):
        return None
    return int(sum(used))


def _shutdown(nvml) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def torch_memory() -> tuple[int | None, int | None, int | None]:
    """(allocated, reserved, peak) bytes from torch's CUDA allocator, summed over devices.

    All ``None`` unless torch is already imported and CUDA already initialised:
    initialising CUDA here would cost a context (hundreds of MB) on every GPU.
    """
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is None:
        return None, None, None
    try:
        if not cuda.is_initialized():
            return None, None, None
        devices = range(cuda.device_count())
        return (
            sum(cuda.memory_allocated(d) for d in devices),
            sum(cuda.memory_reserved(d) for d in devices),
            sum(cuda.max_memory_allocated(d) for d in devices),
        )
    except Exception:  # a CUDA error must not take the meter down
        return None, None, None
