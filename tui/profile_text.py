"""Profile rows as text: the table and the plot shared by ``llm-tui profile`` and the memory screen, and the command itself."""

from __future__ import annotations

import sys

from backends.checkpoint.headers import read_checkpoint_config
from backends.core.errors import UsageError
from backends.core.units import format_bytes
from backends.generation.open import open_model
from backends.loading import transformers_loader as loader
from backends.memory.kv import max_context
from backends.memory.turn import kv_bytes_per_token_of
from backends.profile.export import write_csv
from backends.profile.lengths import (
    check_lengths,
    parse_lengths,
)
from backends.profile.measure import (
    Progress,
    _OutOfMemory,
    profile_rows,
)


def _rate(value) -> str:
    return "—" if value is None else f"{value:,.1f}"


def format_table(rows: list[dict]) -> str:
    header = ("context", "peak", "over base", "KV cache", "KV/token", "KV estimate", "prefill tok/s", "decode tok/s")
    lines = [header]
    for row in rows:
        if row.get("error"):
            lines.append((f"{row['context_tokens']:,}", row["error"], "", "", "", "", "", ""))
            continue
        lines.append((
            f"{row['context_tokens']:,}",
            format_bytes(row["peak_bytes"]),
            format_bytes(row["peak_bytes"] - row["base_bytes"]),
            format_bytes(row["kv_bytes"]),
            format_bytes(row["kv_bytes_per_token"]),
            format_bytes(row.get("kv_estimate_bytes")),
            _rate(row.get("prefill_tok_s")),
            _rate(row.get("decode_tok_s")),
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = []
    for number, line in enumerate(lines):
        text.append("  ".join(str(cell).rjust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if number == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def plot(rows: list[dict], width: int = 56, height: int = 12) -> str:
    """A character plot of memory against context: '*' peak above the base, '+' KV cache."""
    good = [r for r in rows if not r.get("error")]
    if not good:
        return ""
    xs = [r["context_tokens"] for r in good]
    series = [("*", "peak above base", [max(r["peak_bytes"] - r["base_bytes"], 0) for r in good]),
              ("+", "KV cache", [r["kv_bytes"] for r in good])]
    top = max(max(values) for _, _, values in series) or 1
    lo, hi = min(xs), max(xs)
    grid = [[" "] * width for _ in range(height)]

    def col(x: float) -> int:
        return width // 2 if hi == lo else round((x - lo) / (hi - lo) * (width - 1))

    def line(y: float) -> int:
        return height - 1 - round(y / top * (height - 1))

    for mark, _, values in series:
        points = [(col(x), line(y)) for x, y in zip(xs, values)]
        for (c0, r0), (c1, r1) in zip(points, points[1:]):
            for c in range(c0 + 1, c1):
                r = round(r0 + (r1 - r0) * (c - c0) / (c1 - c0))
                if grid[r][c] == " ":
                    grid[r][c] = "."
        for c, r in points:
            grid[r][c] = mark
    labels = {0: format_bytes(top), height // 2: format_bytes(top / 2), height - 1: "0 B"}
    pad = max(len(v) for v in labels.values())
    out = [f"memory vs context ({' '.join(f'{m} {name}' for m, name, _ in series)})"]
    for r in range(height):
        out.append(f"{labels.get(r, '').rjust(pad)} |{''.join(grid[r]).rstrip()}")
    out.append(" " * pad + " +" + "-" * width)
    left, right = f"{lo:,}", f"{hi:,} tokens"
    out.append(" " * (pad + 2) + left + right.rjust(width - len(left)))
    return "\n".join(out)


def run_profile_command(args, spec, progress: Progress | None = None) -> int:
    """``llm-tui profile``: load, measure each length, print the table and plot, write CSV."""

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
        print(format_table(rows))
        chart = plot(rows)
        if chart:
            print()
            print(chart)
        sys.stdout.flush()
        if getattr(args, "csv", None):
            path = write_csv(rows, args.csv)
            print(f"wrote {path}", file=sys.stderr)
    finally:
        handle.unload()
    failed = [r for r in rows if r.get("error")]
    if failed:
        length = failed[0]["context_tokens"]
        raise _OutOfMemory(f"out of memory at {length:,} tokens of context (the rows before it are complete)",
                           "profile shorter --lengths, or load with --quant nf4 or int8")
    return 0
