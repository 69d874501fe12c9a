"""The quantization a checkpoint already has, read from its config.json (or its GGUF file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from backends.checkpoint.headers import read_checkpoint_config

#: Methods that only load checkpoints quantized beforehand.
CHECKPOINT_METHODS = ("gptq", "awq")


@dataclass(frozen=True)
class CheckpointQuant:
    """How a checkpoint on disk is already quantized (its config.json ``quantization_config``)."""

    method: str  # quant_method as written: "gptq", "awq", "bitsandbytes", "fp8", "gguf", ...
    bits: float | None
    group_size: int | None = None
    detail: str = ""
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def quant_name(self) -> str | None:
        """The ``--quant`` value that names this format, if there is one."""
        if self.method in CHECKPOINT_METHODS:
            return self.method
        if self.method == "bitsandbytes":
            if self.raw.get("load_in_8bit") or self.raw.get("_load_in_8bit"):
                return "int8"
            return str(self.raw.get("bnb_4bit_quant_type") or "nf4")
        return None

    @property
    def loads_quantized(self) -> bool:
        """False for GGUF: transformers dequantizes GGUF weights to the load dtype."""
        return self.method != "gguf"


def checkpoint_quantization(path: Path, gguf_file: str | None = None) -> CheckpointQuant | None:
    """The quantization a checkpoint already has, from config.json (or the GGUF file), or None."""
    if gguf_file:
        return CheckpointQuant("gguf", None, detail=f"GGUF file {gguf_file} (dequantized on load)")
    raw = read_checkpoint_config(path).get("quantization_config")
    if not isinstance(raw, dict) or not raw:
        return None
    method = str(raw.get("quant_method") or "").lower()
    if not method:
        method = "bitsandbytes" if any(k in raw for k in ("load_in_4bit", "load_in_8bit")) else "unknown"
    bits: float | None = None
    group = raw.get("group_size") or raw.get("q_group_size")
    if method == "bitsandbytes":
        if raw.get("load_in_8bit") or raw.get("_load_in_8bit"):
            bits, detail = 8.0, "bitsandbytes int8"
        else:
            bits = 4.0
            detail = f"bitsandbytes {raw.get('bnb_4bit_quant_type') or 'nf4'}"
    else:
        value = raw.get("bits") or raw.get("w_bit") or raw.get("weight_bits")
        try:
            bits = float(value) if value is not None else None
        except (TypeError, ValueError):
            bits = None
        if bits is None and "fp8" in method:
            bits = 8.0
        detail = method.upper() if method in CHECKPOINT_METHODS else method
        if bits:
            detail += f" {int(bits)}-bit"
        if isinstance(group, int) and group > 0:
            detail += f", group size {group}"
    return CheckpointQuant(method, bits, group if isinstance(group, int) else None, detail, raw)
