"""`llm-tui profile`: memory and speed against context length, table, plot and CSV."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest

from backends.core.errors import UsageError
from backends.core.units import format_bytes
from backends.profile.export import write_csv
from backends.profile.lengths import (
    check_lengths,
    context_limit,
    default_lengths,
    parse_lengths,
    synthetic_ids,
)
from backends.profile.measure import ProfileRow, profile_rows
from tui.profile_command import profile_plot, run_profile_command
from tui.widgets.profile_table import profile_table


def test_parse_lengths():
    assert parse_lengths("256, 512,1k,512") == [256, 512, 1024]
    for bad in ("", "0", "12,abc", "-5"):
        with pytest.raises(UsageError):
            parse_lengths(bad)


def test_synthetic_prompt_has_exactly_the_length_and_no_special_tokens(demo_handle):
    tokenizer = demo_handle.tokenizer
    for length in (1, 7, 300):
        ids = synthetic_ids(tokenizer, length)
        assert len(ids) == length
        assert not set(ids) & set(tokenizer.all_special_ids)
    assert len(synthetic_ids(None, 50, vocab_size=1000)) == 50


class _Borrowed:
    """The session's default-model handle, lent to the command without letting it unload."""

    def __init__(self, handle):
        self._handle = handle
        self.unloaded = False

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def unload(self):
        self.unloaded = True


def test_profile_command_on_the_default_model_writes_a_linear_kv_column(demo_handle, tmp_path, capsys,
                                                                        monkeypatch):
    import tui.profile_command
    from tui.cli import main

    borrowed = _Borrowed(demo_handle)
    monkeypatch.setattr(tui.profile_command, "open_model", lambda spec, progress=None: borrowed)
    target = tmp_path / "csv"
    code = main(["profile", "--lengths", "64,128,256", "--decode-tokens", "2", "--csv", str(target)])
    assert code == 0
    with open(target, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for column in ("context_tokens", "peak_bytes", "kv_bytes", "prefill_tok_s", "decode_tok_s"):
        assert column in rows[0]
    contexts = [int(r["context_tokens"]) for r in rows]
    kv = [int(r["kv_bytes"]) for r in rows]
    assert contexts == [64, 128, 256]
    assert [k / c for k, c in zip(kv, contexts)] == [46080.0] * 3  # linear, 45 KiB per token
    assert [int(r["kv_estimate_bytes"]) for r in rows] == kv
    assert all(int(r["peak_bytes"]) > 300 * 2**20 for r in rows)  # process RSS with the weights
    assert all(float(r["prefill_tok_s"]) > 0 and float(r["decode_tok_s"]) > 0 for r in rows)
    shown = capsys.readouterr().out
    assert "KV cache" in shown and "decode tok/s" in shown and "memory vs context" in shown
    assert "11.2 MiB" in shown  # the KV cache at 256 tokens
    assert borrowed.unloaded  # the command gives the model back when it is done


def test_profile_rows_for_the_memory_screen(tiny_handle):
    rows = profile_rows(tiny_handle, [16, 48], decode_tokens=3)
    assert [r.context_tokens for r in rows] == [16, 48]
    per_token = 2 * 2 * 16 * 2 * 4  # 2 layers x 2 KV heads x head_dim 16 (64 / 4 heads) x K and V x fp32
    assert [r.kv_bytes for r in rows] == [16 * per_token, 48 * per_token]
    assert all(r.kv_bytes_per_token == per_token and r.memory_kind == "rss" for r in rows)
    assert all(r.decode_tokens == 3 and r.decode_tok_s > 0 for r in rows)


def test_lengths_past_the_context_are_refused_before_loading(tiny_model_dir, monkeypatch):
    import tui.profile_command

    monkeypatch.setattr(tui.profile_command, "open_model", lambda *a, **k: pytest.fail("model was loaded"))
    from backends.core.spec import ModelSpec

    args = SimpleNamespace(lengths="4096,9000", decode_tokens=32, csv=None)
    with pytest.raises(UsageError) as caught:
        run_profile_command(args, ModelSpec(source=str(tiny_model_dir)))
    assert "past the model's context of 8192 tokens" in str(caught.value)
    assert "use lengths up to 8160" in str(caught.value)


def test_out_of_memory_at_a_length_ends_the_run_with_what_was_measured(tiny_handle):
    import torch

    class RunsOut(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.config = inner.config

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def forward(self, input_ids, **kwargs):
            if input_ids.shape[1] > 40:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return self.inner(input_ids=input_ids, **kwargs)

    handle = SimpleNamespace(model=RunsOut(tiny_handle.model), tokenizer=tiny_handle.tokenizer)
    rows = profile_rows(handle, [16, 64, 128], decode_tokens=1)
    assert [r.context_tokens for r in rows] == [16, 64]
    assert rows[-1].error == "out of memory" and rows[0].kv_bytes is not None and rows[-1].kv_bytes is None
    assert "out of memory" in "\n".join(profile_table(rows, None, wide=True))


def test_table_plot_and_csv_from_rows(tmp_path):
    rows = [
        ProfileRow(context_tokens=c, decode_tokens=8, peak_bytes=600 * 2**20 + c * 90_000, base_bytes=600 * 2**20,
                   kv_bytes=c * 46080, kv_bytes_per_token=46080.0, kv_estimate_bytes=c * 46080, prefill_s=0.1,
                   prefill_tok_s=c / 0.1, decode_tok_s=12.5, memory_kind="rss")
        for c in (256, 512, 1024, 2048)
    ]
    table = "\n".join(profile_table(rows, None, wide=True))
    over_base = format_bytes(2048 * 90_000)  # the peak above the base at the longest context
    assert table.splitlines()[0].split()[0] == "context" and "2,048" in table and over_base in table
    chart = profile_plot(rows, width=40, height=8)
    lines = chart.splitlines()
    assert lines[0] == "memory vs context (◆ peak above base   ◇ KV cache)"
    assert len(lines) == 1 + 8
    assert lines[1].rstrip().endswith("◆")  # the largest value sits on the top line, at the right edge
    assert lines[-1].split() == ["0", "1,024", "2,048"]  # the x axis: context tokens
    path = write_csv(rows + [ProfileRow(context_tokens=4096, decode_tokens=8, error="out of memory")],
                     tmp_path / "a" / "p.csv")
    text = path.read_text().splitlines()
    assert text[0].startswith("context_tokens,peak_bytes,base_bytes,kv_bytes") and text[0].endswith(",error")
    assert text[-1].startswith("4096,") and text[-1].endswith("out of memory")
    (tmp_path / "blocker").write_text("")
    with pytest.raises(UsageError, match="cannot write"):
        write_csv(rows, tmp_path / "blocker" / "p.csv")


def test_a_stop_event_ends_the_run_with_the_rows_measured_so_far(tiny_handle):
    import threading

    stop = threading.Event()
    seen: list[dict] = []

    def first_row(row):
        seen.append(row)
        stop.set()  # as if Esc was pressed while the first length was measured

    rows = profile_rows(tiny_handle, [16, 32, 48], decode_tokens=2, stop_event=stop, on_row=first_row)
    assert [r.context_tokens for r in rows] == [16] and rows == seen  # no error, no exception
    assert rows[0].decode_tokens == 2 and rows[0].kv_bytes == 16 * 512
    assert profile_rows(tiny_handle, [16], decode_tokens=2, stop_event=stop) == []  # already set


def test_a_stop_between_decode_steps_keeps_the_steps_decoded(tiny_handle):
    import threading

    stop = threading.Event()
    state = {"armed": False, "steps": 0}

    def progress(text, fraction):
        state["armed"] = fraction is not None and fraction < 1  # the warm-up is over

    def count_decode_steps(module, args, kwargs, output):
        if state["armed"] and kwargs["input_ids"].shape[1] == 1:
            state["steps"] += 1
            if state["steps"] == 3:
                stop.set()

    hook = tiny_handle.model.register_forward_hook(count_decode_steps, with_kwargs=True)
    try:
        rows = profile_rows(tiny_handle, [16, 32], decode_tokens=50, stop_event=stop, progress=progress)
    finally:
        hook.remove()
    assert [r.context_tokens for r in rows] == [16]
    assert rows[0].decode_tokens == 3 and rows[0].decode_tok_s > 0


def test_default_lengths_double_up_to_2048_within_the_context(tiny_handle):
    def handle(limit):
        return SimpleNamespace(info=SimpleNamespace(max_context=limit))

    assert default_lengths(tiny_handle) == [256, 512, 1024, 2048]  # 8192 tokens of context
    assert default_lengths(handle(None)) == [256, 512, 1024, 2048]
    assert default_lengths(handle(1024)) == [256, 512, 1024]
    assert default_lengths(handle(1024), decode_tokens=16) == [256, 512]
    assert default_lengths(handle(200), decode_tokens=16) == [184]  # shorter than 256: what fits
    with pytest.raises(UsageError, match="too short to profile"):
        default_lengths(handle(16), decode_tokens=16)
    with pytest.raises(UsageError, match=r"/profile 9000 plus 16 decode tokens is past the model's context"):
        check_lengths([256, 9000], context_limit(tiny_handle), 16, "/profile")
    with pytest.raises(UsageError, match="use e.g. /profile 256"):
        parse_lengths("12,x", "/profile")
