"""``llm-tui compare``: one conversation through two to four models; each reply, its stats, and where they disagree.

``MODEL@QUANT`` (or ``MODEL@DTYPE``) loads one model a second way, so
``llm-tui compare DIR DIR@nf4 -p …`` says what 4-bit costs on this prompt.
The first model is the reference: every other model reads its reply
(teacher-forced) and the figures compare their next-token distributions
there (``backends.generation.compare``).
"""

from __future__ import annotations

import json
import os
import sys
import threading

from backends.core.errors import LlmTuiError, ModelLoadError, UsageError, error_line
from backends.core.events import stats_parts
from backends.core.params import SamplingParams
from backends.core.sanitize import visible_text
from backends.core.spec import DTYPE_CHOICES, QUANT_CHOICES, ModelSpec
from backends.core.units import format_bytes
from backends.generation.compare.replies import ReplyRun, generate_replies, schedule
from backends.generation.compare.turn import PairOutcome, compare_turn
from backends.generation.open import open_model, runs_on_llamacpp
from backends.prompt.families.base import token_pieces

from .settings import LoadOptions, load_config, spec_for
from .turn_check import check_turn_fits

MIN_MODELS, MAX_MODELS = 2, 4
#: ``@`` suffixes that set the dtype rather than the quantization.
_DTYPE_SUFFIXES = tuple(d for d in DTYPE_CHOICES if d != "auto")


def split_model_argument(text: str) -> tuple[str, dict]:
    """``MODEL[@QUANT|@DTYPE]`` → (MODEL, what the suffix changes in its spec). A path that exists with an
    ``@`` in its name, or a URL's ``user@host``, is a MODEL as it is."""
    name, at, suffix = text.rpartition("@")
    if not at or os.path.exists(text) or "/" in suffix or ":" in suffix:
        return text, {}
    if not name:
        raise UsageError(f"'{text}' names no model before the @", "write MODEL@QUANT, e.g. default@nf4")
    if suffix in QUANT_CHOICES:
        return name, {"quant": suffix}
    if suffix in _DTYPE_SUFFIXES:
        return name, {"dtype": suffix}
    raise UsageError(f"unknown @{suffix} in '{text}'",
                     "after @ give a quantization (" + ", ".join(QUANT_CHOICES) + ") or a dtype ("
                     + ", ".join(_DTYPE_SUFFIXES) + ")")


def compare_specs(args) -> list[ModelSpec]:
    """One spec per MODEL argument: the loading flags for all, each one's ``@`` suffix on top."""
    names = list(args.models)
    if not MIN_MODELS <= len(names) <= MAX_MODELS:
        raise UsageError(f"compare takes {MIN_MODELS} to {MAX_MODELS} models, and {len(names)} "
                         f"{'was' if len(names) == 1 else 'were'} given",
                         "name the same model twice to compare two loadings of it, e.g. default default@nf4")
    options, config = LoadOptions.from_args(args), load_config()
    specs = []
    for text in names:
        name, changes = split_model_argument(text)
        spec = spec_for(name, options, config)
        spec = spec.with_(**changes) if changes else spec
        if spec.engine == "auto" and runs_on_llamacpp(spec):
            spec = spec.with_(engine="generate")  # token figures need every position's logits: transformers'
        specs.append(spec)
    return specs


def compare_params(args, params: SamplingParams) -> SamplingParams:
    """Greedy unless a sampling flag says otherwise: the replies differ because the models do, not by chance."""
    if getattr(args, "temperature", None) is None:
        params = params.with_value("temperature", "0")
    return params.with_value("top_logprobs", "0")  # the figures come from the teacher-forced reading


def open_models(specs: list[ModelSpec], names: list[str], progress=None) -> list:
    """Every model, in order; one that fails is named, and those already open are let go."""
    handles = []
    try:
        for number, (spec, name) in enumerate(zip(specs, names), start=1):
            try:
                handles.append(open_model(spec, progress))
            except LlmTuiError as err:
                failed = ModelLoadError(f"model {number} ({name}) did not load: {err.problem}", err.fix)
                failed.exit_code = err.exit_code
                raise failed from err
            except Exception as err:  # noqa: BLE001 - a loader's own error still names the model
                raise ModelLoadError(f"model {number} ({name}) did not load: {error_line(err)}") from err
    except BaseException:
        for handle in handles:
            handle.unload()
        raise
    return handles


def check_fits(handles, messages: list[dict], params: SamplingParams) -> None:
    """Each model's prompt plus its reply within that model's context (each line naming the model)."""
    for number, handle in enumerate(handles, start=1):
        check_turn_fits(handle, messages, params, who=f"model {number} ({label_of(handle)}): ")


def run_compare_command(args, messages: list[dict], params: SamplingParams, progress=None) -> int:
    """Open every model, let each answer (printing each reply as it ends), then read the first one's
    reply under all of them and print the table, or one JSON object with ``--json``."""
    params = compare_params(args, params)
    specs = compare_specs(args)
    handles = open_models(specs, list(args.models), progress)
    stop = threading.Event()
    out = sys.stdout
    safe = visible_text if out.isatty() else (lambda s: s)
    try:
        check_fits(handles, messages, params)
        plan = schedule(handles)
        print(f"llm-tui: {plan.line}", file=sys.stderr, flush=True)
        on_done = None if args.json else (lambda index, run: print_reply(index, run, safe, out))
        runs = generate_replies(handles, messages, params, stop, on_done)
        pairs = compare_turn(runs, stop)
        if args.json:
            out.write(json.dumps(compare_json(runs, pairs, plan.line), ensure_ascii=False) + "\n")
        else:
            print_pairs(runs, pairs, safe, out)
        out.flush()
    except KeyboardInterrupt:
        stop.set()
        print("llm-tui: interrupted", file=sys.stderr)
        return 130
    finally:
        for handle in handles:
            handle.unload()
    failed = [(n, run) for n, run in enumerate(runs, start=1) if run.done.stop_reason == "error"]
    for number, run in failed:
        print(f"llm-tui: error: model {number} ({label_of(run.handle)}): {run.done.error}", file=sys.stderr)
    return 1 if failed else 0


# -- what is printed ----------------------------------------------------------------------------

def label_of(handle) -> str:
    """The model's label, with the dtype when it was asked for (``DIR@bf16`` against ``DIR``)."""
    dtype = handle.spec.dtype
    return handle.info.label if dtype == "auto" else f"{handle.info.label} · {dtype}"


def model_line(number: int, handle) -> str:
    info = handle.info
    parts = [label_of(handle), info.family, info.device, info.dtype]
    if info.footprint_bytes:
        parts.append(f"weights {format_bytes(info.footprint_bytes)}")
    return f"── {number} · " + " · ".join(p for p in parts if p)


def stats_line(run: ReplyRun) -> str:
    return " · ".join([*stats_parts(run.done.stats), f"stop: {run.done.stop_reason}"])


def print_reply(index: int, run: ReplyRun, safe, out) -> None:
    print(model_line(index + 1, run.handle), file=out)
    print(safe(run.done.text), file=out)
    print(f"   {stats_line(run)}", file=out)
    print(file=out, flush=True)


def print_pairs(runs: list[ReplyRun], pairs: list[PairOutcome], safe, out) -> None:
    ref = runs[0]
    ending = " before its end-of-turn token" if ref.done.stop_reason == "eos" else ""  # a stop token is not text
    print(f"divergence from 1, on its reply ({len(ref.reply_ids)} tokens{ending}; KL in nats; positions count "
          "from 0):", file=out)
    header = ["", "model", "mean KL", "max KL @pos", "top-1 agree", "first diff", "Δ mean logprob", "ppl ratio",
              "tok/s", "weights"]
    rows = [["1", label_of(ref.handle), "reference", "", "", "", "", "", _rate(ref), _weights(ref)]]
    for pair in pairs:
        run = runs[pair.other]
        row = [str(pair.other + 1), label_of(run.handle)]
        if pair.figures is None:
            row += ["—"] * 6
        else:
            s = pair.figures.summary()
            row += [_num(s.mean_kl, 4), _at(s.max_kl, s.max_kl_position),
                    f"{s.top1_agreement:.1%}" if s.top1_agreement is not None else "—",
                    _first(pair, ref, safe), _num(s.mean_logprob_diff, 3, signed=True), _num(s.perplexity_ratio, 3)]
        rows.append(row + [_rate(run), _weights(run)])
    print("\n".join(_table([header, *rows])), file=out)
    for pair in pairs:
        if pair.figures is not None and not pair.figures.complete:
            print(f"{pair.other + 1} vs 1: stopped after {len(pair.figures.kl)} of {pair.figures.tokens} tokens",
                  file=out)
        if pair.note:
            print(f"{pair.other + 1} vs 1: {pair.note}", file=out)
        if pair.words.first_difference is not None or pair.note:
            print(f"{pair.other + 1} vs 1, word by word (similarity {pair.words.similarity:.2f}): "
                  f"{safe(pair.words.inline())}", file=out)


def _first(pair: PairOutcome, ref: ReplyRun, safe) -> str:
    """Where the two models' likeliest tokens first differ, with both tokens: ``5 '.' vs ','``."""
    figures = pair.figures
    at = figures.summary().first_difference
    if at is None:
        return "—"
    a, b = token_pieces(ref.handle.family, [figures.top1_ref[at], figures.top1_other[at]])
    return f"{at} {safe(repr(a))} vs {safe(repr(b))}"


def _at(value: float | None, position: int | None) -> str:
    return "—" if value is None else f"{_num(value, 4)} @{position}"


def _num(value: float | None, digits: int, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    if 0 < abs(value) < 10 ** -digits:  # a near match still shows how near
        return f"{value:+.1e}" if signed else f"{value:.1e}"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _rate(run: ReplyRun) -> str:
    rate = run.done.stats.decode_tok_s
    return f"{rate:.1f}" if rate else "—"


def _weights(run: ReplyRun) -> str:
    return format_bytes(run.handle.info.footprint_bytes) if run.handle.info.footprint_bytes else "—"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def compare_json(runs: list[ReplyRun], pairs: list[PairOutcome], schedule_line: str) -> dict:
    """The one object ``compare --json`` prints (the README documents it)."""
    models = []
    for index, run in enumerate(runs):
        info, done = run.handle.info, run.done
        models.append({"index": index, "label": label_of(run.handle), "spec": run.handle.spec.to_json(),
                       "family": info.family, "device": info.device, "dtype": info.dtype, "quant": info.quant,
                       "footprint_bytes": info.footprint_bytes, "text": done.text, "reply_ids": run.reply_ids,
                       "prompt_ids": done.prompt_ids, "stop_reason": done.stop_reason, "error": done.error,
                       "stats": done.stats.to_json()})
    return {"reference": 0, "schedule": schedule_line, "models": models, "pairs": [p.to_json() for p in pairs]}
