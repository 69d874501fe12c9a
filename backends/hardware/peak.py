"""Peak memory: torch's allocator on CUDA, process RSS (and its high-water mark) on the CPU."""

from __future__ import annotations

import re
import threading


class TurnPeak:
    """Peak memory during a turn: torch's allocator on CUDA, process RSS on CPU, nothing for a model
    that is not in this process (``device`` None: a server's memory is not ours to measure)."""

    def __init__(self, device) -> None:
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.none = device is None
        self._peak = 0

    def start(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        self.sample()

    def sample(self) -> None:
        if not self.cuda and not self.none:
            import psutil

            self._peak = max(self._peak, psutil.Process().memory_info().rss)

    def peak(self) -> tuple[int | None, str]:
        if self.none:
            return None, ""
        if self.cuda:
            import torch

            return int(torch.cuda.max_memory_allocated()), "cuda"
        self.sample()
        return self._peak, "rss"


# -- peak memory ------------------------------------------------------------------


class PeakMemory:
    """Peak memory over a block: torch's allocator on CUDA devices, process RSS on the CPU.

    On Linux the RSS high-water mark is reset through /proc/self/clear_refs and
    read from /proc/self/status; elsewhere a thread samples RSS every 2 ms.
    """

    def __init__(self, devices: list) -> None:
        self.cuda = [d for d in devices if getattr(d, "type", None) == "cuda"]
        self.kind = "cuda" if self.cuda else "rss"
        self.base = 0
        self.peak = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._hwm = False

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            import torch

            for device in self.cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            self.base = sum(int(torch.cuda.memory_allocated(d)) for d in self.cuda)
            return self
        self.base = _rss()
        self._hwm = _reset_hwm()
        if not self._hwm:
            self.peak = self.base
            self._thread = threading.Thread(target=self._sample, name="llm-tui-peak-rss", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            for device in self.cuda:
                torch.cuda.synchronize(device)
            self.peak = sum(int(torch.cuda.max_memory_allocated(d)) for d in self.cuda)
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())
        else:
            self.peak = max(_hwm() or 0, _rss())


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _hwm() is not None
    except OSError:
        return False


def _hwm() -> int | None:
    try:
        with open("/proc/self/status") as handle:
            match = re.search(r"VmHWM:\s+(\d+)\s+kB", handle.read())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None
