"""The load dtype: the spec's, or bf16/fp16 on GPUs, fp32 on the CPU."""

from __future__ import annotations

from backends.core.spec import ModelSpec


def resolve_dtype(spec: ModelSpec, on_gpu: bool, checkpoint=None):
    """The load dtype: the spec's, or for ``auto`` bf16 on GPUs that support it (fp16 otherwise,
    and for GPTQ/AWQ checkpoints, whose kernels want fp16), fp32 on the CPU."""
    import torch

    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if spec.dtype != "auto":
        return table[spec.dtype]
    if on_gpu:
        if checkpoint is not None and getattr(checkpoint, "method", None) in ("gptq", "awq"):
            return torch.float16
        return torch.bfloat16 if bf16_supported() else torch.float16
    return torch.float32  # CPU kernels for half types are slow or missing


def bf16_supported() -> bool:
    import torch

    try:
        return all(torch.cuda.get_device_capability(i)[0] >= 8 for i in range(torch.cuda.device_count()))
    except Exception:
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
