"""During a conversation: the KV cache of the current context, how many more tokens fit,
whether a turn would fit, and the longest prompt that does."""

from __future__ import annotations

from dataclasses import dataclass

from backends.core.units import format_bytes
from backends.hardware.devices import model_devices
from backends.hardware.free_memory import (
    DeviceMemory,
    devices_memory,
)
from backends.hardware.placement import parse_max_memory
from backends.memory.kv import (
    activation_bytes,
    kv_bytes_per_token,
    kv_cache_bytes,
    max_context,
    model_kv_dtype,
)
from backends.memory.verdicts import (
    WARN_FRACTION,
    MemoryVerdict,
)
from backends.memory.weights import weights_on

# -- during a conversation ------------------------------------------------------


@dataclass(frozen=True)
class ContextProjection:
    context_tokens: int
    kv_bytes_per_token: int
    kv_bytes: int
    free_bytes: int | None
    #: More tokens whose KV cache fits in the free memory now (None when unknown).
    tokens_that_fit: int | None
    max_context: int | None
    message: str

    @property
    def limit_tokens(self) -> int | None:
        """Where the context will stop: free memory or the model's own limit, whichever comes first."""
        limits = [x for x in (None if self.tokens_that_fit is None else self.context_tokens + self.tokens_that_fit,
                              self.max_context) if x is not None]
        return min(limits) if limits else None


def _model_of(handle):
    return getattr(handle, "model", handle)


def kv_bytes_per_token_of(handle) -> int:
    """KV bytes per context token of a loaded model (0 when its config is not understood)."""
    model = _model_of(handle)
    try:
        return kv_bytes_per_token(model.config, model_kv_dtype(model))
    except (ValueError, AttributeError):
        return 0


def turn_devices(handle) -> list[DeviceMemory]:
    """Free memory where the model's KV cache will grow, each capped by the model's --max-memory.

    A cap given at load (``--max-memory cpu=2GiB``) is what the user allows the
    model on that device: the weights already there count against it, and what
    is left of it is all a conversation's cache may take.
    """
    model = _model_of(handle)
    names = model_devices(model)
    spec = getattr(handle, "spec", None)
    limits: dict = {}
    if getattr(spec, "max_memory", None):
        try:
            limits = parse_max_memory(spec.max_memory)
        except Exception:
            limits = {}
    # The prompt cache kept from the last turn is either reused by the next one or dropped by it:
    # its memory is the turn's to use, though it is not free now.
    kept = getattr(handle, "prompt_cache", None)
    kept_bytes, kept_on = (kept.nbytes, kept.device) if kept is not None and kept.nbytes else (0, None)
    out = []
    for info in devices_memory(names):
        if kept_bytes and info.device == kept_on:
            info = DeviceMemory(info.device, info.free + kept_bytes, info.total, info.limit)
        key = "cpu" if info.device == "cpu" else int(info.device.split(":")[1])
        cap = limits.get(key)
        if cap is not None:
            info = DeviceMemory(info.device, info.free, info.total, max(int(cap) - weights_on(model, info.device), 0))
        out.append(info)
    return out


def _free_for(handle, devices: list[DeviceMemory] | None) -> int | None:
    devices = devices if devices is not None else turn_devices(handle)
    return sum(d.usable for d in devices) if devices else None


def context_projection(handle, context_tokens: int, *, devices: list[DeviceMemory] | None = None
                       ) -> ContextProjection:
    """KV-cache bytes for the current context and how many more tokens fit in free memory."""
    model = _model_of(handle)
    per_token = kv_bytes_per_token_of(model)
    config = getattr(model, "config", {})
    limit = max_context(config) if config else None
    try:
        kv = kv_cache_bytes(config, context_tokens, model_kv_dtype(model))
    except (ValueError, AttributeError):
        kv = per_token * context_tokens
    free = _free_for(handle, devices)
    fit = None
    if free is not None and per_token:
        # Each turn builds its cache anew over the whole context, and between turns no cache
        # is held: what is free must take all of it, so the context so far counts against it.
        fit = max(int(free * WARN_FRACTION) // per_token - int(context_tokens), 0)
    text = f"KV cache {format_bytes(kv)} for {context_tokens} tokens ({format_bytes(per_token)}/token)"
    if fit is not None:
        text += f"; ~{fit:,} more tokens fit in {format_bytes(free)} free"
    if limit:
        text += f"; context limit {limit:,}"
    return ContextProjection(context_tokens, per_token, kv, free, fit, limit, text)


def check_turn(handle, prompt_tokens: int, max_new_tokens: int, *,
               devices: list[DeviceMemory] | None = None) -> MemoryVerdict:
    """Before a turn: will the KV cache for prompt + reply, and the prefill's working memory, fit?

    ``level`` is "ok", "warn" (close to the limit) or "refuse" (it would not fit);
    the app decides what to do with it; nothing is raised.
    """
    model = _model_of(handle)
    config = getattr(model, "config", {})
    dtype = model_kv_dtype(model)
    tokens = int(prompt_tokens) + int(max_new_tokens)
    per_token = kv_bytes_per_token_of(model)
    try:
        kv = kv_cache_bytes(config, tokens, dtype)
        work = activation_bytes(config, prompt_tokens, dtype)
    except (ValueError, AttributeError):
        kv, work = per_token * tokens, 0
    needed = kv + work
    devices = devices if devices is not None else turn_devices(handle)
    names = tuple(d.device for d in devices)
    common = dict(needed_bytes=int(needed), weights_bytes=0, kv_bytes=int(kv), kv_bytes_per_token=per_token,
                  context_tokens=tokens, overhead_bytes=int(work), devices=names)
    text = (f"this turn needs ~{format_bytes(needed)} (KV cache {format_bytes(kv)} for {prompt_tokens} + "
            f"{max_new_tokens} tokens + {format_bytes(work)} working memory)")
    limit = max_context(config) if config else None
    if not devices:
        return MemoryVerdict("ok", free_bytes=None, message=text + "; free memory unknown", **common)
    free = sum(d.usable for d in devices)
    where = ",".join(names) + (" under --max-memory" if any(d.limit is not None for d in devices) else "")
    fix = ("truncate the history (/budget N), start a new conversation (/clear), lower max_new_tokens, "
           "or load the model with --quant nf4")
    if needed > free:
        return MemoryVerdict("refuse", free_bytes=free, fix=fix, **common,
                             message=f"{text} but only {format_bytes(free)} is free on {where}")
    if needed > free * WARN_FRACTION:
        return MemoryVerdict("warn", free_bytes=free, fix=fix, **common,
                             message=f"{text}, close to the {format_bytes(free)} free on {where}")
    if limit and tokens > limit:
        return MemoryVerdict("warn", free_bytes=free, fix="start a new conversation (/clear) or lower max_new_tokens",
                             message=f"{text}; {tokens} tokens is past the model's context limit of {limit}",
                             **common)
    return MemoryVerdict("ok", free_bytes=free, message=f"{text}; {format_bytes(free)} free on {where}", **common)


def turn_needs(handle, prompt_tokens: int, max_new_tokens: int) -> int:
    """Bytes a turn takes beyond the weights: its KV cache and the prefill's working memory."""
    model = _model_of(handle)
    config = getattr(model, "config", {})
    dtype = model_kv_dtype(model)
    try:
        return (kv_cache_bytes(config, int(prompt_tokens) + int(max_new_tokens), dtype)
                + activation_bytes(config, int(prompt_tokens), dtype))
    except (ValueError, AttributeError):
        return kv_bytes_per_token_of(model) * (int(prompt_tokens) + int(max_new_tokens))


def prompt_budget(handle, max_new_tokens: int, *, devices: list[DeviceMemory] | None = None) -> int | None:
    """The longest prompt whose turn (with ``max_new_tokens`` of reply) fits comfortably in free memory.

    "Comfortably" is under ``WARN_FRACTION`` of it, as the turn check counts.
    None when the free memory is unknown; 0 when not even a one-token prompt fits.
    """
    devices = devices if devices is not None else turn_devices(handle)
    if not devices:
        return None
    room = sum(d.usable for d in devices) * WARN_FRACTION
    if turn_needs(handle, 1, max_new_tokens) > room:
        return 0
    low, high = 1, 1 << 24  # the needs grow with the prompt: the last length that fits
    while low < high:
        middle = (low + high + 1) // 2
        if turn_needs(handle, middle, max_new_tokens) <= room:
            low = middle
        else:
            high = middle - 1
    return low
