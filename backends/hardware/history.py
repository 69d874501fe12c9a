"""Resource samples over time, and memory per turn (what each turn added)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

from backends.hardware.sampling import Sample


class History:
    """The last ``maxlen`` samples, for sparklines. Safe to append from another thread."""

    def __init__(self, maxlen: int = 300) -> None:
        self._items: deque[Sample] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    @property
    def maxlen(self) -> int:
        return self._items.maxlen or 0

    def append(self, sample: Sample) -> None:
        with self._lock:
            self._items.append(sample)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    @property
    def latest(self) -> Sample | None:
        with self._lock:
            return self._items[-1] if self._items else None

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._items)

    def series(self, value: Callable[[Sample], float | int | None]) -> list[float | int | None]:
        """One value per sample, oldest first, e.g. ``history.series(lambda s: s.rss)``."""
        return [value(s) for s in self.samples()]

    def peak(self, value: Callable[[Sample], float | int | None]) -> float | int | None:
        known = [v for v in self.series(value) if v is not None]
        return max(known) if known else None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples())


@dataclass(frozen=True)
class TurnMemory:
    """Memory right after a turn, so the UI can show what each turn cost."""

    turn: int
    context_tokens: int
    rss: int
    gpu_used: int | None  # this process on all GPUs when known, else all processes
    torch_allocated: int | None
    #: ``gpu_used`` counts every process on the devices (NVML could not tell this one's share).
    gpu_device_wide: bool = False

    @classmethod
    def from_sample(cls, turn: int, context_tokens: int, sample: Sample) -> "TurnMemory":
        gpu, device_wide = sample.process_gpu_mem, False
        if gpu is None and sample.has_gpu:
            gpu, device_wide = sample.gpu_mem_used, True
        return cls(turn, context_tokens, sample.rss, gpu, sample.torch_allocated, device_wide)


@dataclass(frozen=True)
class TurnChange:
    """The difference between a turn and the one before it (the first turn: against zero)."""

    turn: int
    context_tokens: int
    rss: int
    gpu_used: int | None
    torch_allocated: int | None


class MemoryLog:
    """A list of TurnMemory records, one per finished turn, with per-turn changes."""

    def __init__(self) -> None:
        self._records: list[TurnMemory] = []

    def record(self, turn: int, context_tokens: int, sample: Sample) -> TurnMemory:
        entry = TurnMemory.from_sample(turn, context_tokens, sample)
        self._records.append(entry)
        return entry

    def change(self, position: int) -> TurnChange:
        """How record ``position`` differs from the one before it."""
        current = self._records[position]
        position = position % len(self._records)
        before = self._records[position - 1] if position > 0 else None
        return TurnChange(
            turn=current.turn,
            context_tokens=current.context_tokens - (before.context_tokens if before else 0),
            rss=current.rss - (before.rss if before else 0),
            # A device-wide figure less this process's own (or the reverse) is no change of anything.
            gpu_used=(_diff(current.gpu_used, before.gpu_used if before else 0)
                      if before is None or before.gpu_device_wide == current.gpu_device_wide else None),
            torch_allocated=_diff(current.torch_allocated, before.torch_allocated if before else 0),
        )

    def __getitem__(self, position: int) -> TurnMemory:
        return self._records[position]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[TurnMemory]:
        return iter(list(self._records))


def _diff(after: int | None, before: int | None) -> int | None:
    return None if after is None or before is None else after - before
