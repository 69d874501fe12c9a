"""Telemetry: the CPU fallback, NVML mapping (with a stand-in pynvml), History, formatting."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from backends.core.units import format_bytes, format_change
from backends.hardware.history import History, TurnMemory
from backends.hardware.sampling import GpuSample, Sample, Sampler
from tui.widgets.meter import Meter

ROOT = Path(__file__).resolve().parents[1]


def make_sample(t: float = 0.0, rss: int = 100, gpus: tuple = (), allocated: int | None = None) -> Sample:
    return Sample(t=t, gpus=gpus, torch_allocated=allocated, torch_reserved=None, torch_peak=None,
                  rss=rss, sys_ram_used=50, sys_ram_total=100, cpu_percent=0.0)


# -- a stand-in for pynvml ---------------------------------------------------


class FakeNVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


def fake_nvml(devices: list[dict], *, init_error: int | None = None, pid: int | None = None) -> types.ModuleType:
    """A module with the pynvml calls the sampler uses; ``devices`` are plain dicts."""
    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = FakeNVMLError
    nvml.NVML_ERROR_LIBRARY_NOT_FOUND = 12
    nvml.NVML_ERROR_DRIVER_NOT_LOADED = 9
    nvml.NVML_ERROR_NO_PERMISSION = 4
    nvml.NVML_ERROR_NOT_SUPPORTED = 3
    nvml.calls = {"init": 0, "shutdown": 0}

    def init():
        nvml.calls["init"] += 1
        if init_error is not None:
            raise FakeNVMLError(init_error)

    def shutdown():
        nvml.calls["shutdown"] += 1

    def memory(handle):
        if handle.get("lost"):
            raise FakeNVMLError(15)
        return types.SimpleNamespace(used=handle["used"], total=handle["total"])

    def utilization(handle):
        if handle.get("util") is None:
            raise FakeNVMLError(3)
        return types.SimpleNamespace(gpu=handle["util"], memory=0)

    def processes(handle):
        return [types.SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in handle.get("procs", [])]

    def by_uuid(uuid):
        for d in devices:
            if d["uuid"] == uuid:
                return d
        raise FakeNVMLError(13)

    nvml.nvmlInit = init
    nvml.nvmlShutdown = shutdown
    nvml.nvmlDeviceGetCount = lambda: len(devices)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: devices[i]
    nvml.nvmlDeviceGetHandleByUUID = by_uuid
    nvml.nvmlDeviceGetName = lambda h: h["name"].encode()  # old bindings return bytes
    nvml.nvmlDeviceGetUUID = lambda h: h["uuid"]
    nvml.nvmlDeviceGetMemoryInfo = memory
    nvml.nvmlDeviceGetUtilizationRates = utilization
    nvml.nvmlDeviceGetComputeRunningProcesses = processes
    return nvml


def gpu(n: int, **extra) -> dict:
    return {"name": f"GPU{n}", "uuid": f"GPU-{n}{n}{n}-abcd", "used": n * 1000, "total": 80_000,
            "util": 10 * n, **extra}


@pytest.fixture
def use_fake_nvml(monkeypatch):
    def install(module: types.ModuleType, visible: str | None = None) -> types.ModuleType:
        monkeypatch.setitem(sys.modules, "pynvml", module)
        if visible is None:
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        else:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
        return module
    return install


# -- the CPU fallback on this machine ------------------------------------------


def test_cpu_fallback_gives_plausible_numbers():
    torch = sys.modules.get("torch")
    cuda_before = torch is not None and torch.cuda.is_initialized()
    with Sampler() as sampler:
        sample = sampler.sample()
        status = sampler.gpu_status
    # No GPU on development machines: the sampler falls back and says why.
    assert sample.has_gpu == ("via NVML" in status)
    if not sample.has_gpu:
        assert sample.gpus == ()
        assert sample.process_gpu_mem is None
        assert "GPU" in status
    assert sample.rss > 1_000_000
    assert 0 < sample.sys_ram_used < sample.sys_ram_total
    # torch's figures come only where this process already uses CUDA: sampling never starts it
    # (a CUDA context costs hundreds of MB on every GPU).
    assert (torch is not None and torch.cuda.is_initialized()) == cuda_before
    figures = (sample.torch_allocated, sample.torch_reserved, sample.torch_peak)
    if cuda_before:
        assert 0 <= sample.torch_allocated <= sample.torch_reserved and sample.torch_allocated <= sample.torch_peak
    else:
        assert figures == (None, None, None)
    assert status and "\n" not in status


def test_cpu_percent_reflects_work():
    sampler = Sampler()
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        sum(range(1000))
    assert sampler.sample().cpu_percent > 0.0


def test_sampling_is_cheap():
    sampler = Sampler()
    sampler.sample()
    start = time.perf_counter()
    for _ in range(50):
        sampler.sample()
    per_sample = (time.perf_counter() - start) / 50
    assert per_sample < 0.02  # a few ms is normal; leave room for a busy CI machine


def test_gpu_sampling_can_be_turned_off():
    sampler = Sampler(use_nvml=False)
    assert sampler.sample().gpus == ()
    assert "off" in sampler.gpu_status


def test_sampling_never_imports_torch():
    code = (
        "import sys\n"
        "from backends.hardware.sampling import Sampler\n"
        "s = Sampler(); s.sample(); s.gpu_status; s.close()\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_torch_stats_need_cuda_already_initialised():
    code = (
        "import torch\n"
        "from backends.hardware.sampling import Sampler\n"
        "s = Sampler().sample()\n"
        "print(s.torch_allocated, torch.cuda.is_initialized())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "False"]


def test_missing_nvml_library_is_reported(use_fake_nvml):
    use_fake_nvml(fake_nvml([], init_error=12))
    sampler = Sampler()
    assert sampler.sample().gpus == ()
    assert sampler.gpu_status == "no NVIDIA GPU: NVML library not found"


def test_other_nvml_errors_are_one_line(use_fake_nvml):
    use_fake_nvml(fake_nvml([], init_error=999))
    sampler = Sampler()
    assert sampler.sample().gpus == ()
    assert sampler.gpu_status.startswith("no GPU data: NVML error")
    assert "\n" not in sampler.gpu_status


def test_nvml_is_initialised_once(use_fake_nvml):
    nvml = use_fake_nvml(fake_nvml([gpu(0)]))
    sampler = Sampler()
    for _ in range(3):
        sampler.sample()
    sampler.close()
    assert nvml.calls == {"init": 1, "shutdown": 1}


def test_nvml_gpus_and_process_memory(use_fake_nvml, monkeypatch):
    import os

    mine = os.getpid()
    use_fake_nvml(fake_nvml([gpu(0, procs=[(mine, 7000), (1, 5)]), gpu(1, util=None, procs=[(1, 5)])]))
    sampler = Sampler()
    sample = sampler.sample()
    assert sampler.gpu_status.startswith("2 GPUs via NVML")
    assert sample.has_gpu
    first, second = sample.gpus
    assert first == GpuSample(index=0, name="GPU0", util_percent=0.0, mem_used=0, mem_total=80_000, process_mem=7000)
    assert second.util_percent is None  # not supported on that board
    assert second.process_mem is None  # this process is not listed there
    assert sample.process_gpu_mem == 7000
    assert sample.gpu_mem_total == 160_000


def test_cuda_visible_devices_by_index(use_fake_nvml):
    use_fake_nvml(fake_nvml([gpu(0), gpu(1), gpu(2)]), visible="2,0")
    sample = Sampler().sample()
    assert [(g.index, g.name) for g in sample.gpus] == [(0, "GPU2"), (1, "GPU0")]


def test_cuda_visible_devices_by_uuid_prefix(use_fake_nvml):
    use_fake_nvml(fake_nvml([gpu(0), gpu(1)]), visible="GPU-111")
    sample = Sampler().sample()
    assert [(g.index, g.name) for g in sample.gpus] == [(0, "GPU1")]


def test_cuda_visible_devices_stops_at_first_invalid_entry(use_fake_nvml):
    use_fake_nvml(fake_nvml([gpu(0), gpu(1)]), visible="1,7,0")
    assert [g.name for g in Sampler().sample().gpus] == ["GPU1"]


def test_cuda_visible_devices_hiding_everything(use_fake_nvml):
    use_fake_nvml(fake_nvml([gpu(0)]), visible="")
    sampler = Sampler()
    assert sampler.sample().gpus == ()
    assert "CUDA_VISIBLE_DEVICES" in sampler.gpu_status


def test_no_devices(use_fake_nvml):
    use_fake_nvml(fake_nvml([]))
    sampler = Sampler()
    assert sampler.sample().gpus == ()
    assert sampler.gpu_status == "no NVIDIA GPU: NVML found no devices"


def test_lost_gpu_stops_gpu_sampling_without_raising(use_fake_nvml):
    device = gpu(0)
    use_fake_nvml(fake_nvml([device]))
    sampler = Sampler()
    assert len(sampler.sample().gpus) == 1
    device["lost"] = True
    assert sampler.sample().gpus == ()
    assert sampler.gpu_status.startswith("GPU sampling stopped")
    assert sampler.sample().rss > 0


# -- History and per-turn memory ------------------------------------------------


def test_history_keeps_the_newest():
    history = History(maxlen=3)
    assert history.latest is None and len(history) == 0
    for i in range(5):
        history.append(make_sample(t=i, rss=i * 10))
    assert len(history) == 3
    assert history.maxlen == 3
    assert [s.t for s in history] == [2, 3, 4]
    assert history.latest.t == 4
    assert history.series(lambda s: s.rss) == [20, 30, 40]
    assert history.peak(lambda s: s.rss) == 40
    assert history.peak(lambda s: s.torch_allocated) is None
    history.clear()
    assert len(history) == 0


def test_history_iteration_is_a_snapshot():
    history = History(maxlen=10)
    history.append(make_sample(t=0))
    for _ in history:
        history.append(make_sample(t=1))  # must not raise "deque mutated during iteration"
    assert len(history) == 2


def test_meter_turn_lines_follow_this_process_gpu_memory():
    """Without torch's allocator figures (a GPU this process uses outside torch, as llama.cpp does)
    the meter's turn lines follow this process's GPU memory: each turn against the one before it,
    shown or not."""
    mib = 1024**2
    meter = Meter(paused=True, turn_lines=2)
    for turn, (tokens, mine, used) in enumerate([(100, 200, 500), (300, 400, 900), (350, 300, 800)]):
        meter.feed(make_sample(rss=1000 * mib, gpus=(GpuSample(0, "G", 1.0, used * mib, 1000 * mib, mine * mib),)))
        meter.log_turn(turn, tokens)
    assert meter.render().plain.splitlines()[-2:] == ["turn 1: 300 ctx tok, +200.0 MiB GPU",
                                                      "turn 2: 350 ctx tok, -100.0 MiB GPU"]
    assert [(t.turn, t.context_tokens, t.gpu_used // mib) for t in meter.turns] == [(0, 100, 200), (1, 300, 400),
                                                                                  (2, 350, 300)]


def test_a_turn_is_never_measured_against_a_figure_of_another_kind():
    """NVML tells this process's share on one turn and only the whole device's on the next (a
    driver that stops reporting processes): the difference of the two is no change of anything,
    so the turn line falls back to what is comparable (RSS)."""
    mib = 1024**2
    meter = Meter(paused=True, turn_lines=2)
    for turn, (rss, used, mine) in enumerate([(1000, 900, 200), (1010, 950, None)]):
        meter.feed(make_sample(rss=rss * mib, gpus=(GpuSample(0, "G", 1.0, used * mib, 1000 * mib, mine and mine * mib),)))
        meter.log_turn(turn, 100 * (turn + 1))
    assert meter.render().plain.splitlines()[-1] == "turn 1: 200 ctx tok, +10.0 MiB RSS"


def test_turn_memory_falls_back_to_device_use():
    sample = make_sample(gpus=(GpuSample(0, "G", None, 800, 1000, None),))
    assert TurnMemory.from_sample(0, 1, sample).gpu_used == 800


def test_sample_to_json_round_trips_through_json():
    import json

    sample = make_sample(gpus=(GpuSample(0, "G", None, 1, 2, None),))
    assert json.loads(json.dumps(sample.to_json()))["gpus"][0]["mem_total"] == 2


# -- formatting ------------------------------------------------------------------


@pytest.mark.parametrize("n, text", [
    (0, "0 B"),
    (1023, "1023 B"),
    (1024, "1.0 KiB"),
    (566_440_000, "540.2 MiB"),
    (166 * 1024**2, "166.0 MiB"),
    (80 * 1024**3, "80.0 GiB"),
    (1024**2 - 1, "1.0 MiB"),  # never "1024.0 KiB"
    (3 * 1024**4, "3.0 TiB"),
    (-2048, "-2.0 KiB"),
    (None, "—"),
])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_format_change_has_a_sign():
    assert format_change(12 * 1024**2) == "+12.0 MiB"
    assert format_change(-512) == "-512 B"
    assert format_change(0) == "+0 B"
    assert format_change(None) == "—"


def test_module_does_not_import_textual_or_torch():
    code = "import sys, backends.hardware.sampling; print('textual' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
