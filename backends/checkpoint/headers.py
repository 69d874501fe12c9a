"""What a checkpoint's files say without loading it: config.json, the GGUF metadata and tensor table, safetensors headers."""

from __future__ import annotations

import json
import struct
from pathlib import Path


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


def safetensors_header(file: Path) -> dict:
    """The JSON header of a .safetensors file: tensor name -> {dtype, shape, data_offsets}."""
    with open(file, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        if size > 100 * 2**20:
            raise ValueError(f"{file.name}: safetensors header of {size} bytes")
        header = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    return header
