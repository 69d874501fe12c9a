"""Memory and speed against context length: one prefill and a few decode steps per length.

``profile_rows`` is shared by ``llm-tui profile`` and the app's ``/profile``;
a stop event is checked between lengths and decode steps."""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Callable

from backends.core.errors import LlmTuiError, ModelLoadError
from backends.generation.runners.prefill import Stopped, prefill
from backends.hardware.devices import input_device, model_devices
from backends.hardware.peak import PeakMemory
from backends.core.errors import is_out_of_memory
from backends.hardware.release import release_memory
from backends.loading.forward_call import ForwardCall, split_output
from backends.memory.kv import cache_nbytes, kv_cache_bytes, model_kv_dtype
from backends.profile.lengths import synthetic_ids


@dataclass(frozen=True)
class ProfileRow:
    """One context length of a profile. A row that ran out of memory has only
    ``context_tokens``, ``decode_tokens`` and ``error``."""

    context_tokens: int
    decode_tokens: int
    peak_bytes: int | None = None  # the peak during prefill and decode (CUDA allocator, or process RSS)
    base_bytes: int | None = None  # the same figure just before the prefill
    kv_bytes: int | None = None  # the KV cache as measured on the real cache
    kv_bytes_per_token: float | None = None
    kv_estimate_bytes: int | None = None  # from the config alone (None when it cannot be told)
    prefill_s: float | None = None
    prefill_tok_s: float | None = None
    decode_tok_s: float | None = None
    memory_kind: str = ""
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


#: The CSV columns, in order (``error`` is added when a row has one).
COLUMNS = ("context_tokens", "peak_bytes", "base_bytes", "kv_bytes", "kv_bytes_per_token", "kv_estimate_bytes",
           "prefill_s", "prefill_tok_s", "decode_tokens", "decode_tok_s", "memory_kind")

Progress = Callable[[str, "float | None"], None]


class _StopFlag:
    """The part of a turn's sink the chunked prefill reads: whether to stop."""

    def __init__(self, stop_event: threading.Event | None) -> None:
        self.stop_event = stop_event

    @property
    def stopped(self) -> bool:
        return self.stop_event is not None and self.stop_event.is_set()


def _forward(model):
    """forward(ids, cache, start) -> (logits, cache), as the engines call it (last position's logits only)."""
    call = ForwardCall.for_model(model)
    return lambda ids, cache, start: split_output(call(model, ids, cache, start))


def _sync(devices) -> None:
    for device in devices:
        if getattr(device, "type", None) == "cuda":
            import torch

            torch.cuda.synchronize(device)


def profile_rows(handle, lengths: list[int], decode_tokens: int = 32, *,
                 progress: Progress | None = None, stop_event: threading.Event | None = None,
                 on_row: Callable[[ProfileRow], None] | None = None) -> list[ProfileRow]:
    """One row per context length: peak memory, measured and estimated KV bytes, prefill and decode speed.

    ``handle`` is a ModelHandle (or anything with ``.model`` and ``.tokenizer``).
    A length that runs out of memory ends the run with a row whose ``error``
    says so; the memory is released first. ``stop_event`` is checked between
    lengths and between decode steps: once set, the rows measured so far are
    returned (a length cut short in its decode keeps the steps it decoded, in
    ``decode_tokens``). ``on_row(row)`` is called with each row as it is measured.
    """
    import torch

    model = getattr(handle, "model", handle)
    if model is None:
        raise ModelLoadError("the model has been unloaded", "load it again before profiling")
    tokenizer = getattr(handle, "tokenizer", None)
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    devices = model_devices(model)
    device = input_device(model)
    forward = _forward(model)
    kv_dtype = model_kv_dtype(model)
    lock = getattr(handle, "_lock", None) or nullcontext()
    rows: list[ProfileRow] = []

    def stopped() -> bool:
        return stop_event is not None and stop_event.is_set()

    with lock:
        if not stopped():
            _warm_up(forward, tokenizer, vocab, device)
        for number, length in enumerate(lengths):
            if stopped():
                break
            if progress:
                progress(f"profiling {length} tokens", number / len(lengths))
            ids = torch.tensor([synthetic_ids(tokenizer, length, vocab)], dtype=torch.long, device=device)
            row = ProfileRow(context_tokens=length, decode_tokens=decode_tokens)
            failed = False
            try:
                measured = _measure(forward, ids, decode_tokens, devices, stop_event)
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
                failed = True
            else:
                if measured is None:  # stopped during its prefill: no row for this length
                    break
                row = measured
            del ids
            if failed:
                release_memory()
                row = replace(row, error="out of memory")
                rows.append(row)
                if on_row:
                    on_row(row)
                break
            try:
                row = replace(row, kv_estimate_bytes=kv_cache_bytes(config, length, kv_dtype))
            except (ValueError, AttributeError, TypeError):
                pass
            rows.append(row)
            release_memory()
            if on_row:
                on_row(row)
    if progress:
        progress("profile stopped" if stopped() else "profile done", 1.0)
    return rows


def _warm_up(forward, tokenizer, vocab, device) -> None:
    """One short forward pass first: weights memory-mapped from disk are paged in and lazy
    initialisation happens here, not inside the first measured row."""
    import torch

    ids = torch.tensor([synthetic_ids(tokenizer, 8, vocab)], dtype=torch.long, device=device)
    with torch.inference_mode():
        logits, cache = forward(ids, None, 0)
        forward(logits[:, -1:].argmax(-1), cache, ids.shape[1])
    del logits, cache, ids
    release_memory()


def _measure(forward, ids, decode_tokens: int, devices,
             stop_event: threading.Event | None = None) -> ProfileRow | None:
    """One length: the chunked prefill a turn does, then ``decode_tokens`` single steps.
    None when it was stopped during the prefill."""
    import torch

    length = ids.shape[1]
    with torch.inference_mode(), PeakMemory(devices) as peak:
        _sync(devices)
        start = time.perf_counter()
        try:
            logits, cache, fed = prefill(forward, ids, _StopFlag(stop_event))
        except Stopped:
            return None
        _sync(devices)
        prefill_s = time.perf_counter() - start
        kv = cache_nbytes(cache)
        token = logits[:, -1:].argmax(-1)
        del logits
        decode_s = 0.0
        decoded = 0
        if decode_tokens > 0:
            start = time.perf_counter()
            for _ in range(decode_tokens):
                if stop_event is not None and stop_event.is_set():
                    break
                decoded += 1
                logits, cache = forward(token, cache, fed)
                fed += 1
                token = logits[:, -1:].argmax(-1)
                del logits
            _sync(devices)
            decode_s = time.perf_counter() - start
        del cache, token
    return ProfileRow(
        context_tokens=length,
        decode_tokens=decoded,
        peak_bytes=int(peak.peak),
        base_bytes=int(peak.base),
        kv_bytes=int(kv),
        kv_bytes_per_token=kv / length if length else 0.0,
        prefill_s=prefill_s,
        prefill_tok_s=length / prefill_s if prefill_s > 0 else None,
        decode_tok_s=decoded / decode_s if decoded and decode_s > 0 else None,
        memory_kind=peak.kind,
    )


class ProfileOutOfMemory(LlmTuiError):
    """A profile that ran out of memory part way (exit code 1)."""
