"""Memory: KV-cache arithmetic, weight estimates, verdicts before a load or a turn, devices, OOM."""

from __future__ import annotations

import weakref
from types import SimpleNamespace

import pytest

import backends.hardware.dtype as dtype_module
import backends.hardware.free_memory as free_memory
import backends.hardware.placement as placement_module
import backends.memory.verdicts as verdicts
from backends.checkpoint.headers import gguf_config, read_gguf
from backends.checkpoint.locate import locate
from backends.core.errors import ModelLoadError, UsageError
from backends.core.spec import ModelSpec
from backends.hardware.devices import describe_device, model_devices
from backends.hardware.dtype import resolve_dtype
from backends.hardware.free_memory import DeviceMemory
from backends.hardware.placement import parse_max_memory, placement
from backends.core.errors import is_out_of_memory
from backends.loading.preflight import memory_verdict as check_before_load
from backends.loading.transformers_loader import load
from backends.memory.kv import cache_nbytes, kv_bytes_per_token, kv_cache_bytes
from backends.memory.turn import check_turn, context_projection, kv_bytes_per_token_of
from backends.memory.verdicts import MEMORY_CHECK_ENV, WARN_FRACTION
from backends.memory.weights import estimate_parameters, estimate_weights

MiB = 2**20
GiB = 2**30

SMOLLM2 = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
           "hidden_size": 576, "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True,
           "max_position_embeddings": 8192}
QWEN_V1_7B = {"num_hidden_layers": 32, "num_attention_heads": 32, "hidden_size": 4096, "kv_channels": 128,
              "seq_length": 8192}
CHATGLM3_6B = {"num_layers": 28, "num_attention_heads": 32, "hidden_size": 4096, "kv_channels": 128,
               "multi_query_attention": True, "multi_query_group_num": 2, "seq_length": 8192}
FALCON_7B = {"n_layer": 32, "n_head": 71, "hidden_size": 4544, "multi_query": True}
GEMMA_LIKE = {"num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 1, "hidden_size": 2048,
              "head_dim": 256, "sliding_window": 4096,
              "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]}


@pytest.mark.parametrize(("config", "dtype", "expected"), [
    (SMOLLM2, "float32", 30 * 3 * 64 * 2 * 4),  # grouped-query: 3 KV heads for 9 query heads
    (QWEN_V1_7B, "bf16", 32 * 32 * 128 * 2 * 2),  # Qwen v1: kv_channels, every head keeps K and V
    (CHATGLM3_6B, "fp16", 28 * 2 * 128 * 2 * 2),  # ChatGLM3: multi_query_group_num KV groups
    (FALCON_7B, "bf16", 32 * 1 * 64 * 2 * 2),  # multi-query: one KV head, head_dim = hidden / heads
    (GEMMA_LIKE, "bf16", 4 * 1 * 256 * 2 * 2),  # explicit head_dim unlike hidden / heads
])
def test_kv_bytes_per_token(config, dtype, expected):
    assert kv_bytes_per_token(config, dtype) == expected
    assert kv_cache_bytes(config, 100, dtype) == 100 * expected


def test_sliding_window_layers_stop_growing():
    per_layer = 256 * 2 * 2
    assert kv_cache_bytes(GEMMA_LIKE, 10_000, "bf16") == 2 * 10_000 * per_layer + 2 * 4095 * per_layer
    mistral = dict(SMOLLM2, sliding_window=4096, use_sliding_window=False)
    assert kv_cache_bytes(mistral, 10_000) == 10_000 * 46080  # declared but switched off


def test_config_objects_and_nested_text_configs_work():
    from transformers import LlamaConfig

    assert kv_bytes_per_token(LlamaConfig(**SMOLLM2)) == 46080
    assert kv_bytes_per_token({"text_config": SMOLLM2, "vision_config": {}}) == 46080
    with pytest.raises(ValueError):
        kv_bytes_per_token({"hidden_size": 8})


def test_parameter_count_from_config_alone():
    assert estimate_parameters(SMOLLM2) == pytest.approx(134_515_008, rel=0.02)


def test_kv_bytes_per_token_match_the_real_cache(demo_handle):
    import torch

    model = demo_handle.model
    ids = torch.arange(100, 140).unsqueeze(0)
    with torch.inference_mode():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    measured = cache_nbytes(cache)
    assert measured == 40 * kv_bytes_per_token_of(demo_handle) == 40 * 46080
    assert cache_nbytes(tuple((layer.keys, layer.values) for layer in cache.layers)) == measured


def test_estimate_is_within_20_percent_of_the_measured_footprint(demo_handle):
    spec = ModelSpec()
    verdict = check_before_load(spec, locate(spec))
    measured = demo_handle.info.footprint_bytes
    assert abs(verdict.weights_bytes - measured) / measured < 0.2
    assert verdict.kv_bytes_per_token == 46080 and verdict.context_tokens == 2048
    assert verdict.level == "ok" and "free on cpu" in verdict.message


def _verdict(devices, **spec_fields):
    spec = ModelSpec(**spec_fields)
    return check_before_load(spec, locate(spec), devices=devices)


def test_verdict_levels_carry_the_numbers(demo_dir, monkeypatch):
    monkeypatch.delenv(MEMORY_CHECK_ENV, raising=False)
    assert _verdict([DeviceMemory("cpu", 64 * GiB, 64 * GiB)]).level == "ok"
    tight = _verdict([DeviceMemory("cpu", 700 * MiB, 64 * GiB)])
    assert tight.level == "warn" and tight.ok and "close to the 700.0 MiB free" in tight.message
    refused = _verdict([DeviceMemory("cpu", 300 * MiB, 64 * GiB)])
    assert refused.level == "refuse" and not refused.ok
    assert refused.needed_bytes > refused.free_bytes == 300 * MiB
    line = refused.line
    assert "\n" not in line and "only 300.0 MiB is free on cpu" in line
    assert "weights 513.1 MiB" in line and "--quant int8" in line and "nf4" in line
    with pytest.raises(ModelLoadError):
        refused.raise_if_refused()
    monkeypatch.setenv(MEMORY_CHECK_ENV, "warn")
    assert _verdict([DeviceMemory("cpu", 300 * MiB, 64 * GiB)]).level == "warn"


def test_quantized_estimates_are_smaller(demo_dir):
    plenty = [DeviceMemory("cpu", 64 * GiB, 64 * GiB)]
    full = _verdict(plenty).weights_bytes
    nf4 = _verdict(plenty, quant="nf4").weights_bytes
    int8 = _verdict(plenty, quant="int8").weights_bytes
    assert nf4 < int8 < full
    assert nf4 == pytest.approx(166_471_168, rel=0.1) and int8 == pytest.approx(219_555_328, rel=0.1)


def test_gpu_verdict_names_the_device(demo_dir):
    small = _verdict([DeviceMemory("cuda:0", 200 * MiB, 16 * GiB)])
    assert small.level == "refuse" and "free on cuda:0" in small.message
    capped = _verdict([DeviceMemory("cuda:0", 12 * GiB, 16 * GiB, limit=100 * MiB)])
    assert capped.level == "refuse" and capped.free_bytes == 100 * MiB


def test_load_is_refused_before_reading_weights(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.delenv(MEMORY_CHECK_ENV, raising=False)
    monkeypatch.setattr(verdicts, "devices_memory", lambda devices, limits=None: [DeviceMemory("cpu", MiB, GiB)])

    def never(*args, **kwargs):
        raise AssertionError("weights were read")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", never)
    with pytest.raises(ModelLoadError) as caught:
        load(ModelSpec(source=str(tiny_model_dir)))
    assert "but only 1.0 MiB is free on cpu" in str(caught.value) and "\n" not in str(caught.value)


def _fail_with(monkeypatch, make_error):
    """from_pretrained that fills memory and then fails; returns a weak reference to what it held."""
    import torch
    from transformers import AutoModelForCausalLM

    held = {}

    def exhaust(*args, **kwargs):
        block = torch.ones(8 * MiB // 4)
        held["ref"] = weakref.ref(block)
        raise make_error()

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", exhaust)
    return held


@pytest.mark.parametrize("kind", ["cuda", "cpu", "memoryerror"])
def test_out_of_memory_while_loading_releases_and_says_what_to_change(tiny_model_dir, monkeypatch, kind):
    import torch

    make = {"cuda": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            "cpu": lambda: RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"),
            "memoryerror": MemoryError}[kind]
    held = _fail_with(monkeypatch, make)
    with pytest.raises(ModelLoadError) as caught:
        load(ModelSpec(source=str(tiny_model_dir)))
    line = str(caught.value)
    assert line.startswith("out of memory while loading 'tiny-llama") and "\n" not in line
    assert "free on cpu" in line and "--quant nf4" in line
    assert caught.value.__context__ is None  # raised after the failed load's frames were let go
    assert held["ref"]() is None  # what the failed load held is gone


def test_other_load_failures_stay_one_line(tiny_model_dir, monkeypatch):
    _fail_with(monkeypatch, lambda: ValueError("header too large\nsecond line"))
    with pytest.raises(ModelLoadError) as caught:
        load(ModelSpec(source=str(tiny_model_dir)))
    assert str(caught.value).startswith("could not load the weights") and "\n" not in str(caught.value)


def test_is_out_of_memory():
    import torch

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(ValueError("bad shape"))


def test_context_projection_and_turn_check(demo_handle):
    free = [DeviceMemory("cpu", 1 * GiB, 64 * GiB)]
    projection = context_projection(demo_handle, 1000, devices=free)
    assert projection.kv_bytes == 1000 * 46080 and projection.kv_bytes_per_token == 46080
    assert projection.tokens_that_fit == int(GiB * WARN_FRACTION) // 46080 - 1000  # the context counts
    assert projection.max_context == 8192 and projection.limit_tokens == 8192
    assert "KV cache 43.9 MiB for 1000 tokens" in projection.message
    fits = check_turn(demo_handle, 500, 100, devices=free)
    assert fits.level == "ok" and fits.kv_bytes == 600 * 46080 and fits.needed_bytes > fits.kv_bytes
    close = check_turn(demo_handle, 500, 100, devices=[DeviceMemory("cpu", int(fits.needed_bytes / 0.9), GiB)])
    assert close.level == "warn" and "close to the" in close.message
    over = check_turn(demo_handle, 4000, 256, devices=[DeviceMemory("cpu", 100 * MiB, GiB)])
    assert over.level == "refuse" and over.kv_bytes == 4256 * 46080 and "/clear" in over.line
    long = check_turn(demo_handle, 8100, 256, devices=[DeviceMemory("cpu", 64 * GiB, 64 * GiB)])
    assert long.level == "warn" and "context limit of 8192" in long.message
    real = context_projection(demo_handle, 10)  # measured free memory
    assert real.free_bytes and real.tokens_that_fit > 0


def test_parse_max_memory():
    assert parse_max_memory("0=20GiB, cuda:1=1.5G,cpu=64GB") == {0: 20 * GiB, 1: int(1.5 * GiB),
                                                                      "cpu": 64 * 10**9}
    with pytest.raises(UsageError, match="not a size"):
        parse_max_memory("0=lots")
    with pytest.raises(UsageError, match="not understood"):
        parse_max_memory("gpu0=1GiB")


def test_gpu_device_maps_fail_clearly_without_a_gpu(monkeypatch):
    monkeypatch.setattr(placement_module, "visible_gpus", lambda: 0)
    assert placement(ModelSpec(device_map="auto")).device_map == "cpu"
    with pytest.raises(ModelLoadError) as caught:
        placement(ModelSpec(device_map="cuda:0"))
    assert "no CUDA device is visible" in str(caught.value) and "--device-map cpu" in str(caught.value)


def test_multi_gpu_placement(monkeypatch):
    monkeypatch.setattr(placement_module, "visible_gpus", lambda: 2)
    fake_gpu = lambda i: DeviceMemory(f"cuda:{i}", 10 * GiB, 16 * GiB)  # noqa: E731
    monkeypatch.setattr(placement_module, "gpu_memory", fake_gpu)
    monkeypatch.setattr(free_memory, "gpu_memory", fake_gpu)
    auto = placement(ModelSpec(device_map="auto"))
    assert (auto.device_map, auto.max_memory, auto.devices) == ("auto", None, ("cuda:0", "cuda:1"))
    assert auto.offload_to_cpu
    one = placement(ModelSpec(device_map="cuda:1"))
    assert (one.device_map, one.devices) == ("cuda:1", ("cuda:1",))
    both = placement(ModelSpec(device_map="cuda:0,cuda:1", max_memory="1=4GiB"))
    assert both.device_map == "auto" and both.max_memory == {0: 9 * GiB, 1: 4 * GiB}
    assert not both.offload_to_cpu
    second_only = placement(ModelSpec(device_map="1,cpu"))
    assert set(second_only.max_memory) == {1, "cpu"} and second_only.devices == ("cuda:1",)
    with pytest.raises(ModelLoadError, match="only 2 GPUs are visible"):
        placement(ModelSpec(device_map="cuda:3"))


def test_auto_dtype_prefers_bf16_on_gpus_that_have_it(monkeypatch):
    import torch

    spec = ModelSpec()
    assert resolve_dtype(spec, on_gpu=False) == torch.float32
    monkeypatch.setattr(dtype_module, "bf16_supported", lambda: True)
    assert resolve_dtype(spec, on_gpu=True) == torch.bfloat16
    assert resolve_dtype(spec, True, SimpleNamespace(method="gptq")) == torch.float16
    monkeypatch.setattr(dtype_module, "bf16_supported", lambda: False)
    assert resolve_dtype(spec, on_gpu=True) == torch.float16
    assert resolve_dtype(ModelSpec(dtype="fp32"), on_gpu=True) == torch.float32


def test_describe_device():
    spread = SimpleNamespace(hf_device_map={"model.embed": 0, "model.layers.20": 1, "lm_head": "cpu",
                                            "model.layers.30": "disk", "model.norm": 10})
    assert describe_device(spread) == "cuda:0,cuda:1,cuda:10,cpu,disk"
    assert describe_device(SimpleNamespace(hf_device_map={"": "cpu"})) == "cpu"
    assert model_devices(SimpleNamespace(hf_device_map={"a": 1, "b": 0, "c": "cpu"})) == ["cuda:0", "cuda:1"]


def test_release_memory_clears_what_an_error_still_holds():
    import torch

    from backends.hardware.release import release_memory

    held = {}

    def generate():
        cache = torch.ones(4 * MiB // 4)
        held["ref"] = weakref.ref(cache)
        raise torch.OutOfMemoryError("CUDA out of memory")

    try:
        generate()
    except torch.OutOfMemoryError as err:
        assert held["ref"]() is not None  # the traceback keeps the frame, and the frame the tensor
        rss = release_memory(err)
        assert held["ref"]() is None and rss > 0


def test_auto_placement_over_gpus_may_spill_to_cpu_but_a_gpu_list_may_not(demo_dir, monkeypatch):
    monkeypatch.delenv(MEMORY_CHECK_ENV, raising=False)
    monkeypatch.setattr(placement_module, "visible_gpus", lambda: 2)
    fake_gpu = lambda i: DeviceMemory(f"cuda:{i}", 200 * MiB, 16 * GiB)  # noqa: E731
    monkeypatch.setattr(placement_module, "gpu_memory", fake_gpu)
    monkeypatch.setattr(free_memory, "gpu_memory", fake_gpu)
    gpus = [DeviceMemory("cuda:0", 200 * MiB, 16 * GiB), DeviceMemory("cuda:1", 200 * MiB, 16 * GiB)]
    spill = _verdict(gpus)
    assert spill.level == "warn" and "will be placed in CPU RAM" in spill.message
    assert spill.free_bytes == 400 * MiB and spill.devices == ("cuda:0", "cuda:1")
    listed = _verdict(gpus, device_map="cuda:0,cuda:1")
    assert listed.level == "refuse" and "free on cuda:0,cuda:1" in listed.message


def test_gguf_header_gives_tensors_and_attention_geometry(tmp_path):
    import numpy as np
    from gguf import GGUFReader, GGUFWriter

    path = tmp_path / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_token_list(["<s>", "hello", "wörld"] * 50)
    writer.add_token_scores([0.5] * 150)
    writer.add_tensor("token_embd.weight", np.zeros((150, 64), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((64, 64), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    fields, tensors = read_gguf(path)
    reader = GGUFReader(str(path))
    assert [(n, s) for n, s in tensors] == [(t.name, tuple(int(x) for x in t.shape)) for t in reader.tensors]
    assert fields["general.architecture"] == "llama" and fields["llama.block_count"] == 2
    config = gguf_config(path)
    assert config["num_key_value_heads"] == 2 and config["max_position_embeddings"] == 128
    assert kv_bytes_per_token(config, "float32") == 2 * 2 * 16 * 2 * 4
    estimate = estimate_weights(tmp_path, "tiny.gguf", dtype="bf16")
    assert estimate.elements == 150 * 64 + 64 * 64 and estimate.bytes == 2 * estimate.elements
    assert estimate.source == "GGUF tensors"
