"""The pre-load memory check for a spec: the loader's decisions, then the arithmetic.

``backends.memory.verdicts.check_before_load`` only adds numbers; here the
spec is turned into what it needs: where the files are, where the weights go,
the dtype, and the quantization plan.
"""

from __future__ import annotations

from backends.checkpoint.locate import locate
from backends.checkpoint.quantized import checkpoint_quantization
from backends.core.spec import ModelSpec
from backends.hardware.dtype import resolve_dtype
from backends.hardware.free_memory import DeviceMemory
from backends.hardware.placement import placement as placement_for
from backends.loading.quant import BNB_METHODS, bnb_compute_dtype, plan_quantization
from backends.memory.verdicts import MemoryVerdict, check_before_load


def memory_verdict(spec: ModelSpec, located=None, *, dtype=None, plan=None, context_tokens: int | None = None,
                   devices: list[DeviceMemory] | None = None) -> MemoryVerdict:
    """Will ``spec`` fit? ``located``, ``dtype`` and ``plan`` are worked out when not given."""
    located = located or locate(spec)
    place = placement_for(spec)
    if dtype is None:
        dtype = resolve_dtype(spec, place.on_gpu, checkpoint_quantization(located.path, located.gguf_file))
    if plan is None:
        plan = plan_quantization(spec, located, None, on_gpu=place.on_gpu, check_packages=False)
    kv_dtype = None
    if plan.method in BNB_METHODS and plan.own_bits is None and spec.bnb_compute_dtype:
        kv_dtype = bnb_compute_dtype(spec, dtype)
    return check_before_load(spec.label, located, place, plan, dtype, kv_dtype=kv_dtype,
                             context_tokens=context_tokens, devices=devices)
