"""The GPU paths no CPU test reaches, checked in one short run on a machine with an NVIDIA GPU.

    python benchmarks/gpu_check.py [--vllm] [--out results.json]

Each check prints one line (ok, failed with why, or skipped with why) and
the figures it measured; the whole run writes them as JSON too:

- nvml:      the meter's sampler sees the GPU through NVML, with this process's share
- bf16:      --dtype auto picks bf16; the default model answers; preview == captured
- oom:       a turn that runs out of GPU memory ends in one line, and the next turn runs
- nf4/int8:  bitsandbytes on CUDA loads, answers, and saves memory
- gptq/awq:  gptqmodel is there or the line says it is not
- vllm:      (with --vllm) a real ``vllm serve`` of the default model: the probe, /tokenize of the
             messages, the IDs sent and echoed, /metrics names
- bandwidth: decode tokens/s of the default model against the memory-bandwidth limit
             (weights read once per token)
- logprobs:  each token's figures on CUDA: greedy tokens are their own top[0]; decode with K=5 vs K=0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

import _setup  # noqa: F401

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
RESULTS: dict[str, dict] = {}


def check(name: str):
    def wrap(fn):
        def run(*args):
            started = time.perf_counter()
            try:
                figures = fn(*args) or {}
                RESULTS[name] = {"status": "ok", **figures}
            except Skip as why:
                RESULTS[name] = {"status": "skipped", "why": str(why)}
            except Exception as err:
                RESULTS[name] = {"status": "failed", "why": f"{type(err).__name__}: {err}",
                                 "trace": traceback.format_exc(limit=3)}
            RESULTS[name]["seconds"] = round(time.perf_counter() - started, 2)
            shown = {k: v for k, v in RESULTS[name].items() if k != "trace"}
            print(f"{name:10} {json.dumps(shown)}", flush=True)
        return run
    return wrap


class Skip(Exception):
    pass


def _answer(handle, **params):
    from backends.core.params import SamplingParams

    events = list(handle.stream(QUESTION, SamplingParams(temperature=0, max_new_tokens=16, **params)))
    return events[-1]


@check("nvml")
def nvml():
    from backends.hardware.sampling import Sampler

    with Sampler() as sampler:
        sample = sampler.sample()
        status = sampler.gpu_status
    if not sample.has_gpu:
        raise AssertionError(f"no GPU seen: {status}")
    gpu = sample.gpus[0]
    return {"gpus": len(sample.gpus), "name": gpu.name, "mem_total": gpu.mem_total, "util": gpu.util_percent,
            "process_mem": gpu.process_mem, "status": status}


@check("bf16")
def bf16():
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    handle = open_model(ModelSpec(engine="generate"))
    done = _answer(handle)
    assert handle.info.dtype in ("bfloat16", "bf16"), handle.info.dtype
    assert done.captured_ids == done.prompt_ids, "captured != preview"
    figures = {"dtype": handle.info.dtype, "device": handle.info.device, "text": done.text,
               "decode_tok_s": done.stats.decode_tok_s, "peak": done.stats.peak_memory_bytes}
    handle.unload()
    return figures


@check("oom")
def oom():
    import torch

    from backends.core.params import SamplingParams
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    handle = open_model(ModelSpec(engine="generate"))
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(int(free * 0.97), dtype=torch.uint8, device="cuda")  # leave almost nothing
    long = [{"role": "user", "content": "word " * 7000}]
    done = list(handle.stream(long, SamplingParams(temperature=0, max_new_tokens=8)))[-1]
    del hog
    torch.cuda.empty_cache()
    after = _answer(handle)
    handle.unload()
    assert done.stop_reason == "error" and "out of memory" in (done.error or ""), done.error
    assert after.stop_reason in ("eos", "length"), after.error
    return {"line": done.error, "next_turn": after.text}


@check("nf4/int8")
def bnb():
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise Skip("bitsandbytes is not installed (pip install 'llm-tui[bnb]')")
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    figures = {}
    for quant in ("nf4", "int8"):
        handle = open_model(ModelSpec(engine="generate", quant=quant))
        done = _answer(handle)
        figures[quant] = {"footprint": handle.info.footprint_bytes, "text": done.text,
                          "decode_tok_s": done.stats.decode_tok_s}
        handle.unload()
    return figures


@check("gptq/awq")
def gptq_awq():
    import importlib.util

    if importlib.util.find_spec("gptqmodel") is None:
        raise Skip("gptqmodel is not installed (pip install 'llm-tui[quant]'); no GPTQ/AWQ checkpoint to load")
    return {"gptqmodel": "installed (load a GPTQ/AWQ checkpoint with llm-tui run MODEL to check it)"}


@check("vllm")
def vllm(model_dir: Path):
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise Skip("vllm is not installed")
    from server_check import serve_and_check

    return serve_and_check(model_dir)


@check("bandwidth")
def bandwidth():
    import pynvml
    import torch

    from backends.core.params import SamplingParams
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    pynvml.nvmlInit()
    device = pynvml.nvmlDeviceGetHandleByIndex(0)
    clock = pynvml.nvmlDeviceGetMaxClockInfo(device, pynvml.NVML_CLOCK_MEM)  # MHz
    bus = pynvml.nvmlDeviceGetMemoryBusWidth(device)  # bits
    peak = clock * 1e6 * 2 * bus / 8  # bytes/s (double data rate)
    handle = open_model(ModelSpec(engine="generate"))
    weights = sum(p.numel() * p.element_size() for p in handle.model.parameters())
    done = list(handle.stream([{"role": "user", "content": "Write a long story."}],
                              SamplingParams(temperature=0, max_new_tokens=256)))[-1]
    handle.unload()
    torch.cuda.synchronize()
    ceiling = peak / weights
    return {"weights_bytes": weights, "peak_bandwidth_GBs": round(peak / 1e9), "ceiling_tok_s": round(ceiling),
            "decode_tok_s": round(done.stats.decode_tok_s or 0, 1),
            "share_of_ceiling": round((done.stats.decode_tok_s or 0) / ceiling, 4)}


@check("logprobs")
def logprobs():
    """Token figures on CUDA: greedy tokens are their own top alternative, and K=5 costs little."""
    from backends.core.params import SamplingParams
    from backends.core.spec import ModelSpec
    from backends.generation.open import open_model

    handle = open_model(ModelSpec(engine="generate"))
    story = [{"role": "user", "content": "Write a long story."}]
    rates = {0: [], 5: []}
    for _ in range(3):
        for k in (0, 5):
            events = list(handle.stream(story, SamplingParams(temperature=0, max_new_tokens=128, top_logprobs=k)))
            rates[k].append(events[-1].stats.decode_tok_s or 0.0)
            if k:
                assert all(e.info.top[0].id == e.id for e in events[:-1]), "a greedy token is not top[0]"
    handle.unload()
    k0, k5 = max(rates[0]), max(rates[5])
    return {"decode_tok_s_k0": round(k0, 1), "decode_tok_s_k5": round(k5, 1), "ratio": round(k5 / k0, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm", action="store_true", help="also start vllm serve and check the remote engine")
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args()
    from backends.checkpoint.demo import ensure_demo

    model_dir = ensure_demo()
    print(f"python {sys.version.split()[0]} · {subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True).stdout.strip()}")
    nvml()
    bf16()
    oom()
    bnb()
    gptq_awq()
    if args.vllm:
        vllm(model_dir)
    bandwidth()
    logprobs()
    Path(args.out).write_text(json.dumps(RESULTS, indent=2))
    failed = [name for name, r in RESULTS.items() if r["status"] == "failed"]
    print(f"{len(RESULTS) - len(failed)} of {len(RESULTS)} checks did not fail; written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
