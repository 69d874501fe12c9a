"""Giving memory back after an unload or a failure."""

from __future__ import annotations

import gc


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
