"""The Meter widget (live sampling on this machine, frozen samples) and the memory plot screen."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.message import Message

from backends.hardware.history import TurnMemory
from backends.hardware.sampling import GpuSample, Sample
from backends.profile.measure import ProfileRow
from tui.screens.memory import MemoryPlot, MemoryScreen, build_series
from tui.widgets.meter import Meter
from tui.widgets.plot import Series, plot_lines

pytestmark = pytest.mark.anyio

MiB = 1024**2
GiB = 1024**3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def cpu_sample(rss: int = 500 * MiB, t: float = 0.0) -> Sample:
    return Sample(t=t, gpus=(), torch_allocated=None, torch_reserved=None, torch_peak=None,
                  rss=rss, sys_ram_used=12 * GiB, sys_ram_total=32 * GiB, cpu_percent=97.0)


def gpu_sample(allocated: int = 35 * GiB, t: float = 0.0) -> Sample:
    gpus = (GpuSample(0, "NVIDIA H100 80GB HBM3", 73.0, 40 * GiB, 80 * GiB, 38 * GiB),
            GpuSample(1, "NVIDIA H100 80GB HBM3", None, 1 * GiB, 80 * GiB, None))
    return Sample(t=t, gpus=gpus, torch_allocated=allocated, torch_reserved=36 * GiB, torch_peak=37 * GiB,
                  rss=2 * GiB, sys_ram_used=20 * GiB, sys_ram_total=256 * GiB, cpu_percent=101.0)


class Host(App):
    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self.meter = meter
        self.samples: list[Meter.Sampled] = []

    def compose(self) -> ComposeResult:
        yield self.meter

    def on_meter_sampled(self, message: Meter.Sampled) -> None:
        self.samples.append(message)


def shown(meter: Meter) -> list[str]:
    return meter.render().plain.splitlines()


async def test_live_sampling_falls_back_to_cpu_and_ram_here():
    app = Host(Meter(id="meter", interval=0.1))
    async with app.run_test(size=(70, 12)) as pilot:
        meter = app.meter
        for _ in range(60):
            await pilot.pause(0.05)
            if len(meter.history) >= 2 and app.samples:
                break
        assert len(meter.history) >= 2
        assert app.samples and app.samples[-1].control is meter  # the message bubbles to the app
        sample = meter.sample
        assert sample.rss > 1_000_000
        lines = shown(meter)
        if sample.has_gpu:  # a machine with a GPU shows the devices instead
            assert lines[0].startswith("GPU0 ")
            return
        assert lines[0] == f"{meter.gpu_status} — showing CPU/RAM"
        assert "GPU" in meter.gpu_status
        assert lines[1].startswith("RSS ") and "CPU " in lines[1]
        assert lines[2].startswith("RAM ") and " / " in lines[2]
        assert lines[3].startswith("RSS ") and "peak" in lines[3]
        assert meter.size.height == len(lines)


async def test_newer_sample_replaces_a_pending_one():
    first, second = Meter.Sampled(cpu_sample(t=1), "s"), Meter.Sampled(cpu_sample(t=2), "s")
    assert second.can_replace(first)
    assert not second.can_replace(Message())


async def test_paused_meter_shows_fed_samples_only():
    app = Host(Meter(id="meter", paused=True, interval=0.05))
    async with app.run_test(size=(70, 12)) as pilot:
        meter = app.meter
        await pilot.pause(0.3)
        assert len(meter.history) == 0 and app.samples == []
        assert shown(meter) == ["sampling…"]
        assert meter.log_turn(0, 10) is None  # nothing to record yet
        meter.feed(cpu_sample(), "no NVIDIA GPU: NVML library not found")
        await pilot.pause()
        lines = shown(meter)
        assert lines[0] == "no NVIDIA GPU: NVML library not found — showing CPU/RAM"
        assert lines[1] == "RSS 500.0 MiB  CPU 97%"
        assert lines[2].startswith("RAM ") and lines[2].endswith(" 12.0 GiB / 32.0 GiB")
        assert lines[3].startswith("RSS ▁ 500.0 MiB (peak 500.0 MiB)")


async def test_gpu_sample_shows_devices_and_torch_memory():
    app = Host(Meter(id="meter", paused=True))
    async with app.run_test(size=(80, 14)) as pilot:
        meter = app.meter
        meter.feed(gpu_sample(), "2 GPUs via NVML: NVIDIA H100 80GB HBM3")
        meter.feed(gpu_sample(allocated=36 * GiB, t=1))
        await pilot.pause()
        lines = shown(meter)
        assert lines[0] == "GPU0 NVIDIA H100 80GB HBM3  util 73%  mine 38.0 GiB"
        assert lines[1].startswith("  mem ") and lines[1].endswith(" 40.0 GiB / 80.0 GiB")
        assert lines[2] == "GPU1 NVIDIA H100 80GB HBM3  util —"
        assert lines[4] == "torch alloc 36.0 GiB  reserved 36.0 GiB  peak 37.0 GiB"
        assert lines[5] == "RSS 2.0 GiB  CPU 101%"
        assert lines[6].startswith("GPU ") and "38.0 GiB" in lines[6]
        assert not any("showing CPU/RAM" in line for line in lines)


async def test_log_turn_shows_the_change_per_turn():
    app = Host(Meter(id="meter", paused=True, turn_lines=2))
    async with app.run_test(size=(70, 12)) as pilot:
        meter = app.meter
        meter.feed(cpu_sample(rss=500 * MiB))
        first = meter.log_turn(1, 100)
        assert first == TurnMemory(turn=1, context_tokens=100, rss=500 * MiB, gpu_used=None, torch_allocated=None)
        meter.feed(cpu_sample(rss=500 * MiB + int(12.3 * MiB)))
        meter.log_turn(2, 1024)
        meter.feed(cpu_sample(rss=500 * MiB))
        meter.log_turn(3, 1500)
        await pilot.pause()
        lines = shown(meter)
        assert lines[-2:] == ["turn 2: 1,024 ctx tok, +12.3 MiB RSS", "turn 3: 1,500 ctx tok, -12.3 MiB RSS"]
        assert [t.turn for t in meter.turns] == [1, 2, 3]
        assert meter.size.height == len(lines)


async def test_log_turn_with_gpu_uses_torch_memory():
    app = Host(Meter(id="meter", paused=True))
    async with app.run_test(size=(70, 14)) as pilot:
        meter = app.meter
        meter.feed(gpu_sample(allocated=35 * GiB))
        meter.log_turn(0, 50)
        meter.feed(gpu_sample(allocated=35 * GiB + 64 * MiB))
        meter.log_turn(1, 2048)
        await pilot.pause()
        assert shown(meter)[-2:] == ["turn 0: 50 ctx tok, 35.0 GiB GPU", "turn 1: 2,048 ctx tok, +64.0 MiB GPU"]


async def test_pause_and_resume():
    app = Host(Meter(id="meter", paused=True, interval=0.05))
    async with app.run_test(size=(70, 12)) as pilot:
        meter = app.meter
        meter.resume()
        for _ in range(60):
            await pilot.pause(0.05)
            if len(meter.history) >= 2:
                break
        assert len(meter.history) >= 2
        meter.pause()
        await pilot.pause(0.1)
        count = len(meter.history)
        await pilot.pause(0.3)
        assert len(meter.history) == count


# -- the memory screen -------------------------------------------------------------------------

TURNS = [TurnMemory(i, 200 + 300 * i, 500 * MiB + i * 3 * MiB, None, None) for i in range(6)]
ROWS = [ProfileRow(context_tokens=c, decode_tokens=2, peak_bytes=480 * MiB + c * 4000, kv_bytes=c * 2300)
        for c in (256, 512, 1024, 2048)]


def test_plot_places_points_on_axes():
    series = [Series("s", [(0.0, 10.0), (100.0, 20.0)], marker="●")]
    lines = [t.plain for t in plot_lines(series, 40, 10, y_format=lambda v: f"{v:.0f}")]
    assert len(lines) == 10
    assert lines[0].startswith("20┤") and lines[0].rstrip().endswith("●")  # top right: the largest
    assert lines[7].startswith("10┤●")  # bottom left: the smallest
    assert lines[8].startswith("  └───")
    assert lines[9].split() == ["0", "50", "100"]


def test_plot_without_data_says_so():
    assert "no data yet" in plot_lines([], 40, 10)[0].plain


def test_series_from_turns_and_profile():
    series = build_series(TURNS, ROWS)
    assert [s.label for s in series] == ["profile peak", "KV cache", "turns (process RSS)"]
    assert series[2].points[0] == (200.0, float(500 * MiB))
    gpu_turns = [TurnMemory(0, 10, 1, 5, 7)]
    assert build_series(gpu_turns, None)[0].label == "turns (GPU allocated (torch))"


async def test_memory_screen_draws_and_closes_on_escape():
    app = Host(Meter(id="meter", paused=True))
    async with app.run_test(size=(100, 40)) as pilot:
        await app.push_screen(MemoryScreen(TURNS, ROWS))
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MemoryScreen)
        main, kv = screen.query(MemoryPlot)
        drawing = main.render().plain
        assert drawing.count("●") == len(TURNS)
        assert drawing.count("◆") == len(ROWS)
        assert "└" in drawing and "┤" in drawing and "2,048" in drawing
        assert kv.render().plain.count("◇") == len(ROWS)
        legend = screen.query_one("#memory-legend").render()
        assert "turns (process RSS)" in str(legend) and "KV cache" in str(legend)
        assert "6 turns: process RSS 500.0 MiB → 515.0 MiB" in screen.summary()
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, MemoryScreen)


async def test_memory_screen_with_turns_only():
    app = Host(Meter(id="meter", paused=True))
    async with app.run_test(size=(80, 30)) as pilot:
        app.meter.feed(cpu_sample())
        app.meter.log_turn(0, 300)
        await app.push_screen(MemoryScreen(app.meter))  # a meter stands for its turns
        await pilot.pause()
        assert len(app.screen.query(MemoryPlot)) == 1
        assert app.screen.query_one(MemoryPlot).render().plain.count("●") == 1
        assert app.screen.summary() == "1 turn logged"
