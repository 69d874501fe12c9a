"""``llm-tui profile``: load, measure memory and speed at each context length, print the table and the curves."""

from __future__ import annotations

import sys

from backends.checkpoint.headers import read_checkpoint_config
from backends.core.errors import UsageError
from backends.core.units import format_bytes
from backends.generation.open import open_model, runs_on_llamacpp
from backends.loading import transformers_loader as loader
from backends.memory.kv import max_context
from backends.memory.turn import kv_bytes_per_token_of
from backends.profile.export import write_csv
from backends.profile.lengths import (
    check_lengths,
    parse_lengths,
)
from backends.profile.measure import (
    ProfileOutOfMemory,
    ProfileRow,
    Progress,
    profile_rows,
)

from .widgets.plot import plot_lines
from .widgets.profile_table import profile_series, profile_table


def profile_plot(rows: list[ProfileRow], width: int = 64, height: int = 14) -> str:
    """The profile's curves as plain text: the peak above the base and the KV cache."""
    series = profile_series(rows, ("over_base", "kv_bytes"))
    if not series:
        return ""
    legend = "   ".join(f"{s.marker} {s.label}" for s in series)
    lines = plot_lines(series, width, height)
    return "\n".join([f"memory vs context ({legend})", *(line.plain.rstrip() for line in lines)])


def run_profile_command(args, spec, progress: Progress | None = None) -> int:
    """``llm-tui profile``: load, measure each length, print the table and plot, write CSV."""
    if spec.is_url:
        raise UsageError(f"{spec.source} is a server: a profile measures a model in this process",
                         "profile the model where it runs, or give a local directory")
    if spec.engine == "auto" and runs_on_llamacpp(spec):
        spec = spec.with_(engine="generate")  # a profile measures transformers' memory, not llama.cpp's
    lengths = parse_lengths(getattr(args, "lengths", "256,512,1024,2048"))
    decode = int(getattr(args, "decode_tokens", 32) or 0)
    if decode < 0:
        raise UsageError(f"--decode-tokens {decode} is negative", "use 0 or more")
    located = loader.locate(spec, progress)
    limit = max_context(read_checkpoint_config(located.path, located.gguf_file))
    check_lengths(lengths, limit, decode)
    handle = open_model(spec, progress)
    try:
        rows = profile_rows(handle, lengths, decode, progress=progress)
        info = handle.info
        per_token = kv_bytes_per_token_of(handle)
        quant = getattr(info, "quant", "none")
        print(f"{info.label} · {info.device} · {info.dtype} · quant {quant} · weights "
              f"{format_bytes(info.footprint_bytes)} · KV estimate {format_bytes(per_token)}/token · "
              f"{decode} decode tokens per length")
        print("\n".join(profile_table(rows, None, wide=True)))
        chart = profile_plot(rows)
        if chart:
            print()
            print(chart)
        sys.stdout.flush()
        if getattr(args, "csv", None):
            path = write_csv(rows, args.csv)
            print(f"wrote {path}", file=sys.stderr)
    finally:
        handle.unload()
    failed = [r for r in rows if r.error]
    if failed:
        length = failed[0].context_tokens
        raise ProfileOutOfMemory(f"out of memory at {length:,} tokens of context (the rows before it are complete)",
                           "profile shorter --lengths, or load with --quant nf4 or int8")
    return 0
