"""Weight bytes without loading: safetensors headers or the GGUF tensor table, else file sizes,
else a parameter count from config.json; at a dtype or quantization bits."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from backends.checkpoint.headers import (
    read_checkpoint_config,
    read_gguf,
    safetensors_header,
)
from backends.checkpoint.weight_files import listed_weight_files
from backends.memory.kv import (
    _get,
    dtype_bytes,
    kv_layout,
    text_config,
)

_SAFETENSORS_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U64": 8, "I32": 4, "U32": 4,
    "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}
_FLOAT_TYPES = {"F64", "F32", "F16", "BF16"}
_EMBEDDING_MARKS = ("embed", "wte", "wpe", "word_embeddings", "lm_head", "output_layer", "embed_out",
                    "token_embd", "output.weight")


# -- weights ------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsEstimate:
    bytes: int
    #: Elements as stored (a packed 4-bit GPTQ weight counts its int32 words).
    elements: int
    #: Elements that will be quantized while loading (bitsandbytes), at ``bits`` each.
    quantized_elements: int
    source: str  # "safetensors headers", "GGUF tensors", "file sizes", "config"


def is_embedding(name: str) -> bool:
    lowered = name.lower()
    return any(mark in lowered for mark in _EMBEDDING_MARKS)


def _quantizable(name: str, shape) -> bool:
    """A linear layer's weight, which bitsandbytes replaces (embeddings and lm_head stay)."""
    return len(shape) == 2 and name.endswith(".weight") and not is_embedding(name) and "norm" not in name.lower()


def estimate_weights(path: Path, gguf_file: str | None = None, *, dtype="float32",
                     quant_bits: float | None = None, config: dict | None = None,
                     pre_quantized: bool = False) -> WeightsEstimate:
    """Bytes the weights will take once loaded at ``dtype``.

    ``quant_bits`` is the effective bits per quantized linear weight when the
    weights are quantized while loading (bitsandbytes). For a checkpoint that
    is already quantized, integer tensors count as stored and float tensors
    at ``dtype``.
    """
    path = Path(path)
    config = config if config is not None else read_checkpoint_config(path, gguf_file)
    width = dtype_bytes(dtype)
    tied = bool(_get(text_config(config), "tie_word_embeddings", default=_get(config, "tie_word_embeddings",
                                                                                 default=False)))
    tensors: list[tuple[str, tuple, str | None]] | None = None
    source = ""
    if gguf_file:
        try:
            tensors = [(name, shape, None) for name, shape in read_gguf(path / gguf_file)[1]]
            source = "GGUF tensors"
        except (OSError, ValueError, struct.error):
            tensors = None
    else:
        files = listed_weight_files(path, ".safetensors")
        if files:
            try:
                tensors = []
                for file in files:
                    for name, info in safetensors_header(file).items():
                        tensors.append((name, tuple(info["shape"]), info["dtype"]))
                source = "safetensors headers"
            except (OSError, ValueError, KeyError, struct.error):
                tensors = None
    if tensors is not None:
        names = {name for name, _, _ in tensors}
        has_embedding = any("embed" in n or "wte" in n or "token_embd" in n for n in names)
        total = elements = quantized = 0
        for name, shape, stored in tensors:
            count = 1
            for dim in shape:
                count *= int(dim)
            if tied and has_embedding and name.endswith("lm_head.weight"):
                continue  # tied to the input embeddings: one copy in memory
            elements += count
            if stored is not None and stored not in _FLOAT_TYPES:
                total += count * _SAFETENSORS_BYTES.get(stored, 1)  # packed or quantized storage
            elif quant_bits and not pre_quantized and _quantizable(name, shape):
                quantized += count
                total += count * quant_bits / 8
            else:
                total += count * width
        return WeightsEstimate(int(total), elements, quantized, source)

    files = [f for suffix in (".safetensors", ".bin", ".pt", ".pth") for f in listed_weight_files(path, suffix)]
    if files:
        stored = sum(f.stat().st_size for f in files)
        stored_width = dtype_bytes(_get(config, "torch_dtype", "dtype", default="float32"))
        count = stored // max(stored_width, 1)
        if pre_quantized:
            return WeightsEstimate(stored, count, 0, "file sizes")
        return WeightsEstimate(int(_scaled(count, width, quant_bits)), count,
                               count if quant_bits else 0, "file sizes")
    count = estimate_parameters(config)
    return WeightsEstimate(int(_scaled(count, width, quant_bits)), count, count if quant_bits else 0, "config")


def _scaled(count: int, width: int, quant_bits: float | None) -> float:
    if not quant_bits:
        return count * width
    return count * 0.85 * quant_bits / 8 + count * 0.15 * width  # embeddings and lm_head stay unquantized


def estimate_parameters(config) -> int:
    """A decoder-only transformer's parameter count from its config (used when no weights are readable)."""
    config = text_config(config)
    hidden = int(_get(config, "hidden_size", "n_embd", "d_model", default=0) or 0)
    if not hidden:
        return 0
    layout = kv_layout(config)
    heads = int(_get(config, "num_attention_heads", "n_head", "num_heads", default=1))
    inter = int(_get(config, "intermediate_size", "ffn_hidden_size", "n_inner", default=4 * hidden) or 4 * hidden)
    vocab = int(_get(config, "vocab_size", "padded_vocab_size", default=32000))
    tied = bool(_get(config, "tie_word_embeddings", default=False))
    q_width = heads * layout.head_dim
    attention = hidden * q_width + 2 * hidden * layout.kv_heads * layout.head_dim + q_width * hidden
    mlp = 3 * hidden * inter
    return vocab * hidden * (1 if tied else 2) + layout.layers * (attention + mlp + 2 * hidden) + hidden


def weights_on(model, device: str) -> int:
    """Bytes of the model's parameters and buffers held on ``device`` ("cpu", "cuda:N")."""
    total = 0
    seen: set[int] = set()
    tensors = list(getattr(model, "parameters", lambda: [])()) + list(getattr(model, "buffers", lambda: [])())
    for tensor in tensors:
        where = tensor.device
        name = f"cuda:{where.index or 0}" if where.type == "cuda" else where.type
        if name != device or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += int(tensor.nbytes)
    return total

#: bitsandbytes' 4-bit block size (one fp32 absmax per block).
BNB_BLOCK = 64


def effective_bits(method: str, *, bits: float | None = None, group_size: int | None = None,
                   double_quant: bool = False) -> float:
    """Bits one quantized weight really takes in memory, its share of the scales included.

    ``int4`` is a checkpoint's own 4-bit quantize: ChatGLM's int4 has one 16-bit
    scale per row (a few thousandths of a bit), Baichuan2's is bitsandbytes nf4
    with double quantization; the larger of the two is counted.
    """
    if method == "int4":
        return 4 + 8 / BNB_BLOCK + 32 / (BNB_BLOCK * 256)
    if method in ("nf4", "fp4") or (method == "bitsandbytes" and (bits or 4) == 4):
        if double_quant:  # 8-bit absmax per block, plus an fp32 per 256 blocks
            return 4 + 8 / BNB_BLOCK + 32 / (BNB_BLOCK * 256)
        return 4 + 32 / BNB_BLOCK
    if method in ("int8", "bitsandbytes"):
        return 8.0
    base = float(bits or 4)
    if group_size and group_size > 0:
        return base + (16 + base) / group_size  # an fp16 scale and a packed zero per group
    return base
