"""Which context lengths to profile: parsing, defaults within the model's limit, synthetic prompts."""

from __future__ import annotations

from backends.core.errors import UsageError

_FILLER = ("The quick brown fox jumps over the lazy dog while the river runs past old stone bridges, "
           "green fields and quiet towns where people read, cook, write letters and talk about the weather. ")

#: The lengths the app profiles when none are given (each one that fits the model's context).
APP_LENGTHS = (256, 512, 1024, 2048)
#: Decode steps per length in the app: enough for a decode speed, short on a CPU.
APP_DECODE_TOKENS = 16


def parse_lengths(text: str, what: str = "--lengths") -> list[int]:
    """'256,512,1k' -> [256, 512, 1024]; positive, in the order given, duplicates dropped.

    ``what`` names the option in error messages (``/profile`` in the app)."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        scale = 1024 if part.endswith("k") else 1
        digits = part[:-1] if part.endswith("k") else part
        if not digits.isdigit() or int(digits) <= 0:
            raise UsageError(f"{what} '{text}': '{part}' is not a positive number of tokens",
                             f"use e.g. {what} 256,512,1024")
        value = int(digits) * scale
        if value not in out:
            out.append(value)
    if not out:
        raise UsageError(f"{what} is empty", f"use e.g. {what} 256,512,1024")
    return out


def context_limit(handle) -> int | None:
    """The model's context length from ``handle.info.max_context`` (None when unknown)."""
    limit = getattr(getattr(handle, "info", None), "max_context", None)
    return int(limit) if isinstance(limit, int) and limit > 0 else None


def default_lengths(handle, decode_tokens: int = 0) -> list[int]:
    """The app's lengths: 256 doubling up to 2048, leaving out those that (with
    ``decode_tokens`` decoded after them) would not fit the model's context."""
    limit = context_limit(handle)
    if limit is None:
        return list(APP_LENGTHS)
    fit = [n for n in APP_LENGTHS if n + decode_tokens <= limit]
    if fit:
        return fit
    if limit - decode_tokens > 0:
        return [limit - decode_tokens]
    raise UsageError(f"the model's context of {limit} tokens is too short to profile",
                     f"it needs more than {decode_tokens} tokens")


def check_lengths(lengths: list[int], limit: int | None, decode_tokens: int, what: str = "--lengths") -> None:
    """UsageError when the longest length plus the decoded tokens is past the context ``limit``."""
    if limit and lengths and max(lengths) + decode_tokens > limit:
        raise UsageError(f"{what} {max(lengths)} plus {decode_tokens} decode tokens is past the model's "
                         f"context of {limit} tokens", f"use lengths up to {limit - decode_tokens}")


def synthetic_ids(tokenizer, length: int, vocab_size: int | None = None) -> list[int]:
    """Exactly ``length`` ordinary token IDs (no special tokens), from a repeated English paragraph."""
    base: list[int] = []
    if tokenizer is not None:
        try:
            base = list(tokenizer.encode(_FILLER, add_special_tokens=False))
        except TypeError:
            base = list(tokenizer.encode(_FILLER))
        except Exception:
            base = []
        special = set(getattr(tokenizer, "all_special_ids", None) or [])
        base = [int(i) for i in base if int(i) not in special]
    if not base:
        top = max((vocab_size or 1000) - 1, 2)
        base = [100 + (i * 7) % max(top - 100, 1) for i in range(64)]
    repeats = length // len(base) + 1
    return (base * repeats)[:length]
