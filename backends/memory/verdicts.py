"""Will a model fit before it loads? A verdict with the numbers and one line to show.

``check_before_load`` adds up the weights (at the target dtype or
quantization bits), the KV cache for a context and a working margin, and
compares that with the free memory of the devices the weights go to. The
answer is ``ok``, ``warn`` or ``refuse``.

``LLM_TUI_MEMORY_CHECK=warn`` turns refusals into warnings; ``off`` skips the check."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Literal

from backends.checkpoint.headers import read_checkpoint_config
from backends.core.errors import ModelLoadError
from backends.core.units import format_bytes
from backends.hardware.free_memory import (
    DeviceMemory,
    cpu_memory,
    devices_memory,
)
from backends.memory.kv import (
    activation_bytes,
    dtype_bytes,
    kv_bytes_per_token,
    kv_cache_bytes,
    max_context,
)
from backends.memory.weights import effective_bits, estimate_weights

MEMORY_CHECK_ENV = "LLM_TUI_MEMORY_CHECK"

#: Context the pre-load check budgets for when none is given (capped at the model's limit).
DEFAULT_CONTEXT = 2048
#: Above this share of the free memory, a load or a turn gets a warning.
WARN_FRACTION = 0.85
#: A CUDA context costs about this much on each GPU it is created on.
CUDA_CONTEXT_BYTES = 512 * 2**20


# -- verdicts -------------------------------------------------------------------


#: "ok": fits; "warn": close to the limit; "refuse": would not fit.
VerdictLevel = Literal["ok", "warn", "refuse"]


@dataclass(frozen=True)
class MemoryVerdict:
    """Will it fit? ``level`` is "ok", "warn" or "refuse"; ``message`` is the one line to show."""

    level: VerdictLevel
    needed_bytes: int
    free_bytes: int | None
    weights_bytes: int
    kv_bytes: int
    kv_bytes_per_token: int
    context_tokens: int
    overhead_bytes: int
    devices: tuple[str, ...]
    message: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.level != "refuse"

    @property
    def line(self) -> str:
        return f"{self.message} — {self.fix}" if self.fix else self.message

    def raise_if_refused(self) -> None:
        if self.level == "refuse":
            raise ModelLoadError(self.message, self.fix)

    def to_json(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def check_mode() -> str:
    """"on" (refuse what cannot fit), "warn" (never refuse) or "off", from LLM_TUI_MEMORY_CHECK."""
    value = os.environ.get(MEMORY_CHECK_ENV, "on").strip().lower()
    if value in ("0", "off", "no", "false", "skip"):
        return "off"
    if value in ("warn", "warning"):
        return "warn"
    return "on"


def check_before_load(label: str, located, placement, plan, dtype, *, kv_dtype=None,
                      context_tokens: int | None = None,
                      devices: list[DeviceMemory] | None = None) -> MemoryVerdict:
    """Estimate what loading a checkpoint needs and compare it with free memory.

    Pure arithmetic over what the loader has decided: ``located`` (where the
    files are), ``placement`` (where the weights go), ``plan`` (a
    ``QuantPlan``: bits per weight), ``dtype`` and ``kv_dtype`` (the KV cache's,
    when it differs). ``devices`` overrides the measured free memory (for tests
    and what-if questions).
    """
    config = read_checkpoint_config(located.path, located.gguf_file)
    kv_dtype = kv_dtype if kv_dtype is not None else dtype
    quant_bits = plan.weight_bits
    if plan.own_bits is not None and not placement.on_gpu:
        quant_bits = None  # a checkpoint's own quantize runs on the weights loaded in full: that is the peak
    weights = estimate_weights(located.path, located.gguf_file, dtype=dtype, quant_bits=quant_bits,
                               config=config, pre_quantized=plan.checkpoint is not None)
    try:
        per_token = kv_bytes_per_token(config, kv_dtype)
        limit = max_context(config)
        tokens = context_tokens or (min(DEFAULT_CONTEXT, limit) if limit else DEFAULT_CONTEXT)
        kv = kv_cache_bytes(config, tokens, kv_dtype)
        work = activation_bytes(config, tokens, kv_dtype)
    except ValueError:
        per_token, tokens, kv, work = 0, context_tokens or 0, 0, 0
    overhead = work + weights.bytes // 20
    if devices is None:
        devices = devices_memory(placement.devices, placement.limits)
    gpus = [d for d in devices if d.device != "cpu"]
    torch = sys.modules.get("torch")
    if gpus and not (torch is not None and torch.cuda.is_initialized()):
        overhead += CUDA_CONTEXT_BYTES * len(gpus)
    needed = weights.bytes + kv + overhead
    return _verdict(label, needed, weights.bytes, kv, per_token, tokens, overhead, devices, placement,
                    plan, dtype, located, config)


def _verdict(label, needed, weights, kv, per_token, tokens, overhead, devices, placement, plan, dtype,
             located, config) -> MemoryVerdict:
    mode = check_mode()
    names = tuple(d.device for d in devices) or tuple(placement.devices)
    parts = f"weights {format_bytes(weights)} + KV cache {format_bytes(kv)} for {tokens} tokens + " \
            f"{format_bytes(overhead)} working memory"
    common = dict(needed_bytes=int(needed), weights_bytes=int(weights), kv_bytes=int(kv),
                  kv_bytes_per_token=int(per_token), context_tokens=int(tokens), overhead_bytes=int(overhead),
                  devices=names)
    if mode == "off":
        return MemoryVerdict("ok", free_bytes=None, message=f"'{label}' needs ~{format_bytes(needed)} ({parts}); "
                             "memory check off", **common)
    if not devices:
        return MemoryVerdict("ok", free_bytes=None, message=f"'{label}' needs ~{format_bytes(needed)} ({parts}); "
                             "free memory unknown", **common)
    gpus = [d for d in devices if d.device != "cpu"]
    pool = gpus if gpus else devices
    free = sum(d.usable for d in pool)
    where = ",".join(d.device for d in pool)
    text = f"'{label}' needs ~{format_bytes(needed)} ({parts})"
    if needed <= free * WARN_FRACTION:
        return MemoryVerdict("ok", free_bytes=free, message=f"{text}; {format_bytes(free)} free on {where}", **common)
    fix = _suggest(needed, free, weights, plan, dtype, located, config, placement)
    if needed <= free:
        return MemoryVerdict("warn", free_bytes=free, fix=fix,
                             message=f"{text}, close to the {format_bytes(free)} free on {where}", **common)
    if gpus and placement.offload_to_cpu:
        cpu = cpu_memory()
        if needed <= free + cpu.usable * WARN_FRACTION:
            spill = needed - free
            return MemoryVerdict("warn", free_bytes=free, fix=fix, **common,
                                 message=f"{text} but {format_bytes(free)} is free on {where}: about "
                                         f"{format_bytes(spill)} will be placed in CPU RAM (slow)")
    level = "warn" if mode == "warn" else "refuse"
    return MemoryVerdict(level, free_bytes=free, fix=fix, **common,
                         message=f"{text} but only {format_bytes(free)} is free on {where}")


def _suggest(needed, free, weights, plan, dtype, located, config, placement) -> str:
    ideas = []
    rest = needed - weights
    if not plan.quantized and not located.gguf_file:
        sizes = {method: estimate_weights(located.path, dtype=dtype, quant_bits=effective_bits(method),
                                          config=config).bytes + rest for method in ("int8", "nf4")}
        ideas.append(f"--quant int8 (~{format_bytes(sizes['int8'])}) or nf4 (~{format_bytes(sizes['nf4'])})")
    if dtype_bytes(dtype) == 4 and not plan.quantized:
        half = weights // 2 + rest
        ideas.append(f"--dtype bf16 (~{format_bytes(half)})")
    if placement.on_gpu and placement.visible_gpus > len([d for d in placement.devices if d != "cpu"]):
        ideas.append(f"--device-map auto to spread over all {placement.visible_gpus} GPUs")
    ideas.append("a shorter context, or close other programs")
    text = "try " + ", ".join(ideas)
    if check_mode() == "on":
        text += f" (or set {MEMORY_CHECK_ENV}=warn to try anyway)"
    return text


def oom_advice(plan=None, on_gpu: bool = False, spec=None) -> str:
    """One line of what to change after running out of memory while loading."""
    ideas = []
    quantized = plan is not None and getattr(plan, "quantized", False)
    if not quantized:
        ideas.append("--quant nf4 or int8")
    if (spec is not None and getattr(spec, "dtype", "auto") == "fp32") or (not on_gpu and not quantized):
        ideas.append("--dtype bf16")
    if on_gpu:
        ideas.append("--device-map auto to spread over all GPUs (and CPU RAM)")
        ideas.append("--max-memory to leave room on a busy GPU")
    ideas.append("closing other programs")
    return "try " + ", ".join(ideas)
