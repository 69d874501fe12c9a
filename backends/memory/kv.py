"""KV-cache geometry: bytes per token of context, with grouped-query and multi-query attention,
explicit head_dim and Qwen v1's ``kv_channels``, sliding-window layers capped at their window;
and the bytes a live cache object holds."""

from __future__ import annotations

from dataclasses import dataclass

DTYPE_BYTES = {
    "float64": 8, "float32": 4, "fp32": 4, "float": 4, "float16": 2, "fp16": 2, "half": 2,
    "bfloat16": 2, "bf16": 2, "int8": 1, "uint8": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
}


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


#: The largest prefill chunk an engine feeds in one forward call (``generation.prefill``): the
#: prefill's working memory is that of one chunk, however long the prompt.
PREFILL_CHUNK_MAX = 2048


def activation_bytes(config, tokens: int, dtype="float32") -> int:
    """Working memory of the prefill of ``tokens`` tokens (hidden states and the MLP's widest point
    of one chunk of at most ``PREFILL_CHUNK_MAX`` tokens)."""
    tokens = min(int(tokens), PREFILL_CHUNK_MAX)
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


def model_kv_dtype(model):
    """The dtype the KV cache will be in: the dtype of the hidden states (the embeddings' dtype)."""
    try:
        return model.get_input_embeddings().weight.dtype
    except Exception:
        return getattr(model, "dtype", "float32")


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
