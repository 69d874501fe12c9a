"""Giving memory back after an unload or a failure."""

from __future__ import annotations

import gc


def freeze_heap() -> None:
    """Hide the long-lived heap (torch, transformers, a loaded model's wrappers) from the cyclic
    collector, after one collection so that earlier garbage is not kept for good.

    A full collection over that heap holds the GIL for hundreds of milliseconds (measured here:
    200-280 ms with the default model loaded), which a screen shows as a frozen frame. Call it
    once a load has finished; objects made later are collected as usual.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def thaw_heap() -> None:
    """Let the collector see the frozen heap again, before a model is unloaded (its cycles among it)."""
    gc.unfreeze()


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
