"""Sampling parameters, parsed from flags and from `/set NAME VALUE`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from backends.core.errors import UsageError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.0
    max_new_tokens: int = 512
    seed: int | None = None
    #: Keep each prompt within this many tokens by the family's truncation (None: no limit).
    max_prompt_tokens: int | None = None
    #: For each generated token, its probability and this many alternatives (0: none computed).
    top_logprobs: int = 5

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def to_json(self) -> dict:
        return asdict(self)

    def with_value(self, name: str, raw: str) -> "SamplingParams":
        """A copy with one parameter set from text; bad names or values raise UsageError."""
        kinds = {f.name: f for f in fields(self)}
        if name not in kinds:
            raise UsageError(f"unknown parameter '{name}'", "one of: " + ", ".join(kinds))
        value = parse_value(name, raw)
        return replace(self, **{name: value})

    def validate(self) -> "SamplingParams":
        for name in (f.name for f in fields(self)):
            check_range(name, getattr(self, name))
        return self


_RANGES = {
    "temperature": (0.0, 100.0),
    "top_p": (0.0, 1.0),
    "top_k": (0, 1_000_000),
    "repetition_penalty": (0.01, 100.0),
    "max_new_tokens": (1, 1_000_000),
    "seed": (0, 2**63 - 1),
    "max_prompt_tokens": (1, 100_000_000),
    "top_logprobs": (0, 20),
}

#: Parameters that "none" (or "off") unsets.
_OPTIONAL = {"seed": ("none", "random", "off"), "max_prompt_tokens": ("none", "off")}


def parse_value(name: str, raw: str):
    text = str(raw).strip()
    if text.lower() in _OPTIONAL.get(name, ()):
        return None
    kind = int if name in ("top_k", "max_new_tokens", "seed", "max_prompt_tokens", "top_logprobs") else float
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(
            f"'{text}' is not a valid {name}", f"give {'an integer' if kind is int else 'a number'}"
        ) from None
    check_range(name, value)
    return value


def check_range(name: str, value) -> None:
    if value is None:
        return
    low, high = _RANGES[name]
    if not low <= value <= high:
        raise UsageError(f"{name} {value} is out of range", f"use a value from {low} to {high}")


PARAM_NAMES = tuple(f.name for f in fields(SamplingParams))
