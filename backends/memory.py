"""Memory before it runs out: estimates, free memory, and verdicts with the numbers.

Before loading, :func:`check_before_load` adds up the weights (read from the
safetensors headers or GGUF tensor table without loading anything, else file
sizes, else a parameter count from config.json) at the target dtype or
quantization bits, the KV cache for a context, and a working margin, and
compares that with the free memory of the devices the model will go to
(NVML or ``torch.cuda.mem_get_info`` for GPUs, available RAM for the CPU).
The answer is a :class:`MemoryVerdict`: ``ok``, ``warn`` or ``refuse``, the
numbers, and one line to show.

During a conversation, :func:`context_projection` says how many bytes the KV
cache of the current context takes and how many more tokens fit, and
:func:`check_turn` warns before a turn that would not fit.

The KV cache per token is ``layers x kv_heads x head_dim x 2 (keys and values)
x dtype bytes``, with grouped-query and multi-query attention (``num_key_value_heads``,
ChatGLM's ``multi_query_group_num``, Falcon's ``multi_query``), explicit
``head_dim`` and Qwen v1's ``kv_channels``, and sliding-window layers capped
at their window.

``LLM_TUI_MEMORY_CHECK=warn`` turns refusals into warnings; ``off`` skips the check.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError
from .telemetry import format_bytes

MEMORY_CHECK_ENV = "LLM_TUI_MEMORY_CHECK"

#: Context the pre-load check budgets for when none is given (capped at the model's limit).
DEFAULT_CONTEXT = 2048
#: Above this share of the free memory, a load or a turn gets a warning.
WARN_FRACTION = 0.85
#: A CUDA context costs about this much on each GPU it is created on.
CUDA_CONTEXT_BYTES = 512 * 2**20

DTYPE_BYTES = {
    "float64": 8, "float32": 4, "fp32": 4, "float": 4, "float16": 2, "fp16": 2, "half": 2,
    "bfloat16": 2, "bf16": 2, "int8": 1, "uint8": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
}
_SAFETENSORS_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U64": 8, "I32": 4, "U32": 4,
    "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}
_FLOAT_TYPES = {"F64", "F32", "F16", "BF16"}
_EMBEDDING_MARKS = ("embed", "wte", "wpe", "word_embeddings", "lm_head", "output_layer", "embed_out",
                    "token_embd", "output.weight")


def dtype_bytes(dtype) -> int:
    """Bytes per element of a torch dtype or a name like "bf16"/"float32"."""
    size = getattr(dtype, "itemsize", None)
    if isinstance(size, int):
        return size
    return DTYPE_BYTES.get(str(dtype).replace("torch.", "").lower(), 4)


# -- reading configs ----------------------------------------------------------


def _get(config, *names, default=None):
    for name in names:
        value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        if value is not None:
            return value
    return default


def text_config(config):
    """The language-model part of a config (multimodal configs nest it in ``text_config``)."""
    inner = _get(config, "text_config", "llm_config", "language_config")
    if inner is not None and _get(inner, "num_hidden_layers", "num_layers", "n_layer") is not None:
        return inner
    return config


@dataclass(frozen=True)
class KvLayout:
    """What one token costs in the KV cache, per layer."""

    layers: int
    kv_heads: int
    head_dim: int
    #: Elements (keys + values) one token adds in one full-attention layer.
    elements_per_layer: int
    sliding_window: int | None = None
    sliding_layers: int = 0  # layers whose cache is capped at the window
    no_cache_layers: int = 0  # layers that keep no KV cache (MLP-only, shared KV)

    @property
    def full_layers(self) -> int:
        return self.layers - self.sliding_layers - self.no_cache_layers


def kv_layout(config) -> KvLayout:
    """Read the attention geometry from a config (a dict from config.json, or a config object)."""
    config = text_config(config)
    layers = int(_get(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers", default=0) or 0)
    heads = int(_get(config, "num_attention_heads", "n_head", "num_heads", "n_heads", default=0) or 0)
    hidden = int(_get(config, "hidden_size", "n_embd", "d_model", "dim", default=0) or 0)
    if not layers or not heads:
        raise ValueError("the config has no layer or attention-head count")

    if _get(config, "multi_query_attention") and _get(config, "multi_query_group_num"):
        kv_heads = int(_get(config, "multi_query_group_num"))  # ChatGLM2/3, GLM-4 (remote code)
    elif _get(config, "num_key_value_heads") is not None:
        kv_heads = int(_get(config, "num_key_value_heads"))
    elif _get(config, "n_head_kv", "num_kv_heads") is not None:
        kv_heads = int(_get(config, "n_head_kv", "num_kv_heads"))
    elif _get(config, "multi_query") and not _get(config, "new_decoder_architecture"):
        kv_heads = 1  # Falcon-7B style multi-query
    else:
        kv_heads = heads

    head_dim = _get(config, "head_dim")
    if not isinstance(head_dim, int) or head_dim <= 0:
        head_dim = _get(config, "kv_channels")  # Qwen v1, ChatGLM
    if not isinstance(head_dim, int) or head_dim <= 0:
        if not hidden:
            raise ValueError("the config has no head_dim, kv_channels or hidden size")
        head_dim = hidden // heads

    nope, rope, v_dim = (_get(config, "qk_nope_head_dim"), _get(config, "qk_rope_head_dim"),
                         _get(config, "v_head_dim"))
    if all(isinstance(x, int) for x in (nope, rope, v_dim)) and _get(config, "kv_lora_rank"):
        per_layer = heads * (nope + rope) + heads * v_dim  # multi-head latent attention, decompressed
    else:
        per_layer = 2 * kv_heads * head_dim

    window = _get(config, "sliding_window")
    types = _get(config, "layer_types")
    sliding = no_cache = 0
    if isinstance(types, (list, tuple)) and types:
        sliding = sum(1 for t in types if "sliding" in str(t) or t == "chunked_attention")
        no_cache = sum(1 for t in types if t in ("moe", "mlp", "dummy", "linear_attention", "conv"))
        window = window or _get(config, "attention_chunk_size")
    elif isinstance(window, int) and window > 0 and _get(config, "use_sliding_window") is not False:
        sliding = layers
    if not (isinstance(window, int) and window > 0):
        window, sliding = None, 0
    return KvLayout(layers, kv_heads, head_dim, per_layer, window, min(sliding, layers), no_cache)


def kv_bytes_per_token(config, dtype="float32") -> int:
    """KV-cache bytes one more token of context costs (before any sliding window fills)."""
    layout = kv_layout(config)
    return (layout.layers - layout.no_cache_layers) * layout.elements_per_layer * dtype_bytes(dtype)


def kv_cache_bytes(config, tokens: int, dtype="float32") -> int:
    """KV-cache bytes for ``tokens`` tokens of context, sliding-window layers capped at their window."""
    layout = kv_layout(config)
    size = dtype_bytes(dtype) * layout.elements_per_layer
    total = layout.full_layers * tokens * size
    if layout.sliding_layers:
        kept = min(tokens, max(layout.sliding_window - 1, 1))  # the cache keeps window - 1 past tokens
        total += layout.sliding_layers * kept * size
    return int(total)


def activation_bytes(config, tokens: int, dtype="float32") -> int:
    """Working memory for a forward pass over ``tokens`` tokens (hidden states and the MLP's widest point)."""
    config = text_config(config)
    hidden = int(_get(config, "hidden_size", "n_embd", "d_model", default=0) or 0)
    inter = int(_get(config, "intermediate_size", "ffn_hidden_size", "n_inner", default=4 * hidden) or 4 * hidden)
    vocab = int(_get(config, "vocab_size", "padded_vocab_size", default=0) or 0)
    return int(dtype_bytes(dtype) * (tokens * (4 * hidden + 2 * inter) + 2 * vocab))


def max_context(config) -> int | None:
    config = text_config(config)
    value = _get(config, "max_position_embeddings", "seq_length", "n_positions", "max_sequence_length",
                 "model_max_length")
    return int(value) if isinstance(value, int) and value > 0 else None


def read_checkpoint_config(path: Path, gguf_file: str | None = None) -> dict:
    """config.json as a dict, or the equivalent fields of a GGUF file's metadata."""
    if gguf_file:
        return gguf_config(Path(path) / gguf_file)
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def gguf_config(file: Path) -> dict:
    """The attention geometry of a GGUF file, under config.json's names."""
    try:
        fields, _ = read_gguf(file)
    except (OSError, ValueError, struct.error):
        return {}
    arch = fields.get("general.architecture") or "llama"
    names = {
        "num_hidden_layers": "block_count", "num_attention_heads": "attention.head_count",
        "num_key_value_heads": "attention.head_count_kv", "hidden_size": "embedding_length",
        "intermediate_size": "feed_forward_length", "max_position_embeddings": "context_length",
        "head_dim": "attention.key_length", "vocab_size": "vocab_size",
    }
    out = {}
    for name, key in names.items():
        value = fields.get(f"{arch}.{key}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = int(value)
    return out


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}


def read_gguf(file: Path) -> tuple[dict, list[tuple[str, tuple[int, ...]]]]:
    """A GGUF file's scalar metadata and its tensors' (name, shape), read from the header only.

    Arrays (the vocabulary, merges) are skipped without being decoded, so this
    takes milliseconds where a full reader takes seconds.
    """
    import mmap

    with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise ValueError(f"{file} is not a GGUF file")
        (version,) = struct.unpack_from("<I", data, 4)
        if version < 2:
            raise ValueError(f"GGUF version {version} is not supported")
        tensors_count, kv_count = struct.unpack_from("<QQ", data, 8)
        at = 24

        def string(at: int) -> tuple[str, int]:
            (size,) = struct.unpack_from("<Q", data, at)
            return data[at + 8:at + 8 + size].decode("utf-8", "replace"), at + 8 + size

        def value(kind: int, at: int):
            if kind in _GGUF_SCALARS:
                fmt = _GGUF_SCALARS[kind]
                return struct.unpack_from(fmt, data, at)[0], at + struct.calcsize(fmt)
            if kind == 8:
                return string(at)
            if kind == 9:
                item, count = struct.unpack_from("<IQ", data, at)
                at += 12
                if item in _GGUF_SCALARS:
                    return None, at + count * struct.calcsize(_GGUF_SCALARS[item])
                if item == 8:
                    for _ in range(count):
                        at += 8 + struct.unpack_from("<Q", data, at)[0]
                    return None, at
                for _ in range(count):
                    _, at = value(item, at)
                return None, at
            raise ValueError(f"unknown GGUF value type {kind}")

        fields: dict = {}
        for _ in range(kv_count):
            key, at = string(at)
            (kind,) = struct.unpack_from("<I", data, at)
            item, at = value(kind, at + 4)
            if item is not None:
                fields[key] = item
        tensors = []
        for _ in range(tensors_count):
            name, at = string(at)
            (dims,) = struct.unpack_from("<I", data, at)
            shape = struct.unpack_from(f"<{dims}Q", data, at + 4)
            at += 4 + 8 * dims + 4 + 8  # dims, then the type (u32) and the data offset (u64)
            tensors.append((name, tuple(int(x) for x in shape)))
    return fields, tensors


# -- weights ------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsEstimate:
    bytes: int
    #: Elements as stored (a packed 4-bit GPTQ weight counts its int32 words).
    elements: int
    #: Elements that will be quantized while loading (bitsandbytes), at ``bits`` each.
    quantized_elements: int
    source: str  # "safetensors headers", "GGUF tensors", "file sizes", "config"


def safetensors_header(file: Path) -> dict:
    """The JSON header of a .safetensors file: tensor name -> {dtype, shape, data_offsets}."""
    with open(file, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        if size > 100 * 2**20:
            raise ValueError(f"{file.name}: safetensors header of {size} bytes")
        header = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    return header


def _weight_files(path: Path, suffix: str) -> list[Path]:
    for index in (f"model{suffix}.index.json", f"pytorch_model{suffix}.index.json"):
        if (path / index).is_file():
            try:
                names = set(json.loads((path / index).read_text())["weight_map"].values())
                return sorted(path / n for n in names if (path / n).is_file())
            except (OSError, ValueError, KeyError):
                break
    files = sorted(path.glob(f"*{suffix}"))
    if suffix == ".safetensors":
        preferred = [f for f in files if f.name.startswith("model")]
        return preferred or [f for f in files if not f.name.startswith("consolidated")] or files
    return files


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
        files = _weight_files(path, ".safetensors")
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

    files = [f for suffix in (".safetensors", ".bin", ".pt", ".pth") for f in _weight_files(path, suffix)]
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


# -- free memory ----------------------------------------------------------------


@dataclass(frozen=True)
class DeviceMemory:
    device: str  # "cpu", "cuda:0", ...
    free: int
    total: int
    limit: int | None = None  # a --max-memory cap

    @property
    def usable(self) -> int:
        return min(self.free, self.limit) if self.limit is not None else self.free


def cpu_memory() -> DeviceMemory:
    import psutil

    ram = psutil.virtual_memory()
    return DeviceMemory("cpu", int(ram.available), int(ram.total))


def gpu_memory(index: int) -> DeviceMemory | None:
    """Free and total bytes of visible CUDA device ``index``: torch if CUDA is up, else NVML, else torch."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is not None and cuda.is_initialized():
            free, total = cuda.mem_get_info(index)
            free += max(cuda.memory_reserved(index) - cuda.memory_allocated(index), 0)  # reusable in-process
            return DeviceMemory(f"cuda:{index}", int(free), int(total))
    except Exception:
        pass
    from_nvml = _nvml_memory(index)
    if from_nvml is not None:
        return from_nvml
    try:
        import torch as _torch

        if _torch.cuda.is_available() and index < _torch.cuda.device_count():
            free, total = _torch.cuda.mem_get_info(index)
            return DeviceMemory(f"cuda:{index}", int(free), int(total))
    except Exception:
        pass
    return None


def _nvml_memory(index: int) -> DeviceMemory | None:
    try:
        import pynvml

        from .telemetry import visible_handles

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        handles = visible_handles(pynvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
        for position, handle in handles:
            if position == index:
                info = pynvml.nvmlDeviceGetMemoryInfo(handle)
                return DeviceMemory(f"cuda:{index}", int(info.free), int(info.total))
        return None
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def devices_memory(devices: list[str], limits: dict | None = None) -> list[DeviceMemory]:
    """Free memory of each named device ("cpu", "cuda:N"), with --max-memory caps applied."""
    limits = limits or {}
    out = []
    for device in devices:
        if device == "cpu":
            info = cpu_memory()
            cap = limits.get("cpu")
        elif device.startswith("cuda:"):
            index = int(device[5:])
            info = gpu_memory(index)
            cap = limits.get(index, limits.get(device))
        else:
            continue
        if info is None:
            continue
        if cap is not None:
            info = DeviceMemory(info.device, info.free, info.total, int(cap))
        out.append(info)
    return out


# -- verdicts -------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryVerdict:
    """Will it fit? ``level`` is "ok", "warn" or "refuse"; ``message`` is the one line to show."""

    level: str
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


def check_before_load(spec, located=None, *, context_tokens: int | None = None,
                      devices: list[DeviceMemory] | None = None, dtype=None, plan=None) -> MemoryVerdict:
    """Estimate what loading ``spec`` needs and compare it with free memory.

    ``located`` (a ``loader.Located``), ``dtype`` and ``plan`` (a ``quant.QuantPlan``)
    are worked out from the spec when not given; ``devices`` overrides the
    measured free memory (for tests and what-if questions).
    """
    from . import loader, quant

    located = located or loader.locate(spec)
    placement = loader.placement(spec)
    if dtype is None:
        dtype = loader.resolve_dtype(spec, placement.on_gpu)
    if plan is None:
        plan = quant.plan_quantization(spec, located, None, on_gpu=placement.on_gpu, check_packages=False)
    config = read_checkpoint_config(located.path, located.gguf_file)
    kv_dtype = dtype
    if plan.method in quant.BNB_METHODS and plan.own_bits is None and getattr(spec, "bnb_compute_dtype", None):
        kv_dtype = quant.bnb_compute_dtype(spec, dtype)
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
    label = getattr(spec, "label", str(located.path))
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
        from .quant import effective_bits

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


def model_kv_dtype(model):
    """The dtype the KV cache will be in: the dtype of the hidden states (the embeddings' dtype)."""
    try:
        return model.get_input_embeddings().weight.dtype
    except Exception:
        return getattr(model, "dtype", "float32")


def model_devices(model) -> list[str]:
    mapping = getattr(model, "hf_device_map", None)
    found: set[str] = set()
    if mapping:
        for value in mapping.values():
            text = f"cuda:{value}" if isinstance(value, int) else str(value)
            if text == "cuda":
                text = "cuda:0"
            found.add(text)
    else:
        try:
            device = next(model.parameters()).device
            found.add(f"cuda:{device.index or 0}" if device.type == "cuda" else device.type)
        except Exception:
            found.add("cpu")
    gpus = sorted((d for d in found if d.startswith("cuda")), key=lambda d: int(d.split(":")[1]))
    return gpus or (["cpu"] if "cpu" in found or not found else sorted(found))


def kv_bytes_per_token_of(handle) -> int:
    """KV bytes per context token of a loaded model (0 when its config is not understood)."""
    model = _model_of(handle)
    try:
        return kv_bytes_per_token(model.config, model_kv_dtype(model))
    except (ValueError, AttributeError):
        return 0


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
        from .loader import parse_max_memory

        try:
            limits = parse_max_memory(spec.max_memory)
        except Exception:
            limits = {}
    out = []
    for info in devices_memory(names):
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


def cache_nbytes(cache) -> int:
    """Bytes held by a KV cache object (transformers Cache, legacy tuples, remote-code tuples)."""
    seen: set[int] = set()

    def walk(obj, depth: int) -> int:
        if obj is None or depth > 6:
            return 0
        if hasattr(obj, "untyped_storage") and hasattr(obj, "nbytes"):
            try:
                key = obj.untyped_storage().data_ptr() + obj.storage_offset() * obj.element_size()
            except Exception:
                key = id(obj)
            if key in seen and obj.numel():
                return 0
            seen.add(key)
            return int(obj.nbytes)
        if isinstance(obj, (list, tuple)):
            return sum(walk(item, depth + 1) for item in obj)
        if isinstance(obj, dict):
            return sum(walk(item, depth + 1) for item in obj.values())
        layers = getattr(obj, "layers", None)
        if isinstance(layers, (list, tuple)):
            return sum(walk(layer, depth + 1) for layer in layers)
        if hasattr(obj, "key_cache") and hasattr(obj, "value_cache"):
            return walk(obj.key_cache, depth + 1) + walk(obj.value_cache, depth + 1)
        if hasattr(obj, "keys") and hasattr(obj, "values") and not callable(getattr(obj, "keys")):
            return walk(obj.keys, depth + 1) + walk(obj.values, depth + 1)
        total = 0
        for name in ("self_attention_cache", "cache"):
            if hasattr(obj, name):
                total += walk(getattr(obj, name), depth + 1)
        return total

    return walk(cache, 0)


# -- running out anyway ---------------------------------------------------------

_OOM_MARKS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
              "std::bad_alloc", "cublas_status_alloc_failed")


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA OOM, CPU allocator failures and MemoryError."""
    if isinstance(err, MemoryError) or type(err).__name__ in ("OutOfMemoryError", "MemoryError"):
        return True
    text = str(err).lower()
    return any(mark in text for mark in _OOM_MARKS)


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
