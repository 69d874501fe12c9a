"""Memory and speed against context length (``llm-tui profile``).

For each context length, a synthetic prompt of exactly that many ordinary
tokens is prefilled in one forward pass, then ``decode_tokens`` tokens are
decoded greedily one at a time. Each row records the peak memory (torch's
allocator on GPUs, process RSS on the CPU), the KV cache measured on the real
cache object after prefill (the sum of its key and value tensors' bytes), the
estimate from the config for comparison, and prefill and decode tokens per
second. :func:`profile_rows` is what the app's memory screen calls (``/profile``,
with :func:`default_lengths` and a stop event); :func:`run_profile_command`
prints a table and a character plot and writes CSV.
"""

from __future__ import annotations

import csv
import inspect
import re
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

from .errors import LlmTuiError, ModelLoadError, UsageError
from .telemetry import format_bytes

COLUMNS = ("context_tokens", "peak_bytes", "base_bytes", "kv_bytes", "kv_bytes_per_token", "kv_estimate_bytes",
           "prefill_s", "prefill_tok_s", "decode_tokens", "decode_tok_s", "memory_kind")

_FILLER = ("The quick brown fox jumps over the lazy dog while the river runs past old stone bridges, "
           "green fields and quiet towns where people read, cook, write letters and talk about the weather. ")

Progress = Callable[[str, "float | None"], None]

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


# -- peak memory ------------------------------------------------------------------


class PeakMemory:
    """Peak memory over a block: torch's allocator on CUDA devices, process RSS on the CPU.

    On Linux the RSS high-water mark is reset through /proc/self/clear_refs and
    read from /proc/self/status; elsewhere a thread samples RSS every 2 ms.
    """

    def __init__(self, devices: list) -> None:
        self.cuda = [d for d in devices if getattr(d, "type", None) == "cuda"]
        self.kind = "cuda" if self.cuda else "rss"
        self.base = 0
        self.peak = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._hwm = False

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            import torch

            for device in self.cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            self.base = sum(int(torch.cuda.memory_allocated(d)) for d in self.cuda)
            return self
        self.base = _rss()
        self._hwm = _reset_hwm()
        if not self._hwm:
            self.peak = self.base
            self._thread = threading.Thread(target=self._sample, name="llm-tui-peak-rss", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            for device in self.cuda:
                torch.cuda.synchronize(device)
            self.peak = sum(int(torch.cuda.max_memory_allocated(d)) for d in self.cuda)
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())
        else:
            self.peak = max(_hwm() or 0, _rss())


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _hwm() is not None
    except OSError:
        return False


def _hwm() -> int | None:
    try:
        with open("/proc/self/status") as handle:
            match = re.search(r"VmHWM:\s+(\d+)\s+kB", handle.read())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


# -- measuring ----------------------------------------------------------------------


def _model_devices(model) -> list:
    import torch

    devices = {p.device for p in model.parameters()}
    return sorted(devices, key=str) or [torch.device("cpu")]


def _input_device(model):
    try:
        return model.get_input_embeddings().weight.device
    except Exception:
        return next(model.parameters()).device


def _forward_kwargs(model) -> dict:
    try:
        names = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    if "logits_to_keep" in names:
        return {"logits_to_keep": 1}  # the prefill's full logits would dwarf the KV cache
    if "num_logits_to_keep" in names:
        return {"num_logits_to_keep": 1}
    return {}


def _sync(devices) -> None:
    for device in devices:
        if getattr(device, "type", None) == "cuda":
            import torch

            torch.cuda.synchronize(device)


def profile_rows(handle, lengths: list[int], decode_tokens: int = 32, *,
                 progress: Progress | None = None, stop_event: threading.Event | None = None,
                 on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """One row per context length: peak memory, measured and estimated KV bytes, prefill and decode speed.

    ``handle`` is a ModelHandle (or anything with ``.model`` and ``.tokenizer``).
    A length that runs out of memory ends the run with a row whose ``error``
    says so; the memory is released first. ``stop_event`` is checked between
    lengths and between decode steps: once set, the rows measured so far are
    returned (a length cut short in its decode keeps the steps it decoded, in
    ``decode_tokens``). ``on_row(row)`` is called with each row as it is measured.
    """
    import torch

    from .loader import release_memory
    from .memory import is_out_of_memory, kv_cache_bytes, model_kv_dtype

    model = getattr(handle, "model", handle)
    if model is None:
        raise ModelLoadError("the model has been unloaded", "load it again before profiling")
    tokenizer = getattr(handle, "tokenizer", None)
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    devices = _model_devices(model)
    device = _input_device(model)
    extra = _forward_kwargs(model)
    kv_dtype = model_kv_dtype(model)
    lock = getattr(handle, "_lock", None) or nullcontext()
    rows: list[dict] = []

    def stopped() -> bool:
        return stop_event is not None and stop_event.is_set()

    with lock:
        if not stopped():
            _warm_up(model, tokenizer, vocab, device, extra)
        for number, length in enumerate(lengths):
            if stopped():
                break
            if progress:
                progress(f"profiling {length} tokens", number / len(lengths))
            ids = torch.tensor([synthetic_ids(tokenizer, length, vocab)], dtype=torch.long, device=device)
            row: dict = {"context_tokens": length, "decode_tokens": decode_tokens}
            failed = False
            try:
                row.update(_measure(model, ids, decode_tokens, devices, extra, stop_event))
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
                failed = True
            del ids
            if failed:
                release_memory()
                row["error"] = "out of memory"
                rows.append(row)
                if on_row:
                    on_row(row)
                break
            try:
                row["kv_estimate_bytes"] = kv_cache_bytes(config, length, kv_dtype)
            except (ValueError, AttributeError, TypeError):
                row["kv_estimate_bytes"] = None
            rows.append(row)
            release_memory()
            if on_row:
                on_row(row)
    if progress:
        progress("profile stopped" if stopped() else "profile done", 1.0)
    return rows


def _warm_up(model, tokenizer, vocab, device, extra: dict) -> None:
    """One short forward pass first: weights memory-mapped from disk are paged in and lazy
    initialisation happens here, not inside the first measured row."""
    import torch

    from .loader import release_memory

    ids = torch.tensor([synthetic_ids(tokenizer, 8, vocab)], dtype=torch.long, device=device)
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True, **extra)
        token = out.logits[:, -1:].argmax(-1)
        model(input_ids=token, past_key_values=out.past_key_values, use_cache=True, **extra)
    del out, token, ids
    release_memory()


def _measure(model, ids, decode_tokens: int, devices, extra: dict,
             stop_event: threading.Event | None = None) -> dict:
    import torch

    from .memory import cache_nbytes

    length = ids.shape[1]
    with torch.inference_mode(), PeakMemory(devices) as peak:
        _sync(devices)
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, **extra)
        _sync(devices)
        prefill_s = time.perf_counter() - start
        cache = out.past_key_values
        kv = cache_nbytes(cache)
        token = out.logits[:, -1:].argmax(-1)
        del out
        decode_s = 0.0
        decoded = 0
        if decode_tokens > 0:
            start = time.perf_counter()
            for _ in range(decode_tokens):
                if stop_event is not None and stop_event.is_set():
                    break
                decoded += 1
                out = model(input_ids=token, past_key_values=cache, use_cache=True, **extra)
                cache = out.past_key_values
                token = out.logits[:, -1:].argmax(-1)
                del out
            _sync(devices)
            decode_s = time.perf_counter() - start
        del cache, token
    return {
        "peak_bytes": int(peak.peak),
        "base_bytes": int(peak.base),
        "kv_bytes": int(kv),
        "kv_bytes_per_token": kv / length if length else 0.0,
        "prefill_s": prefill_s,
        "prefill_tok_s": length / prefill_s if prefill_s > 0 else None,
        "decode_tokens": decoded,
        "decode_tok_s": decoded / decode_s if decoded and decode_s > 0 else None,
        "memory_kind": peak.kind,
    }


# -- output ---------------------------------------------------------------------------


def write_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path).expanduser()
    columns = list(COLUMNS) + (["error"] if any(r.get("error") for r in rows) else [])
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    except OSError as err:
        raise UsageError(f"cannot write the CSV file '{path}': {err.strerror or err}",
                         "give a --csv path in a folder you can write to") from None
    return path


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


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
    from . import loader
    from .engine import open_model
    from .memory import kv_bytes_per_token_of, max_context, read_checkpoint_config

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


class _OutOfMemory(LlmTuiError):
    """A profile that ran out of memory part way (exit code 1)."""
