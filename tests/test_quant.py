"""Quantization: --quant against what a checkpoint already is, one-line errors, real 4/8-bit and GPTQ loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from backends.checkpoint.locate import Located
from backends.core.errors import MissingPackageError, ModelLoadError, UsageError
from backends.core.spec import ModelSpec
from backends.loading import quant

ROOT = Path(__file__).resolve().parent.parent
PARIS = [{"role": "user", "content": "What is the capital of France?"}]


def _checkpoint(tmp_path: Path, quantization: dict | None, name: str = "ckpt") -> Located:
    folder = tmp_path / name
    folder.mkdir()
    config = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64}
    if quantization is not None:
        config["quantization_config"] = quantization
    (folder / "config.json").write_text(json.dumps(config))
    return Located(folder)


GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False}
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm"}
BNB4 = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}


def test_pre_quantized_checkpoints_are_detected(tmp_path):
    gptq = quant.checkpoint_quantization(_checkpoint(tmp_path, GPTQ, "g").path)
    assert (gptq.method, gptq.bits, gptq.group_size, gptq.quant_name) == ("gptq", 4.0, 128, "gptq")
    assert gptq.detail == "GPTQ 4-bit, group size 128"
    assert quant.checkpoint_quantization(_checkpoint(tmp_path, AWQ, "a").path).quant_name == "awq"
    assert quant.checkpoint_quantization(_checkpoint(tmp_path, BNB4, "b").path).quant_name == "fp4"
    assert quant.checkpoint_quantization(_checkpoint(tmp_path, None, "plain").path) is None
    gguf = quant.checkpoint_quantization(tmp_path, "model.Q4_1.gguf")
    assert gguf.method == "gguf" and not gguf.loads_quantized


def test_pre_quantized_checkpoint_loads_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(quant, "installed", lambda name: True)
    located = _checkpoint(tmp_path, GPTQ)
    for wanted in ("none", "gptq"):
        plan = quant.plan_quantization(ModelSpec(source=str(located.path), quant=wanted), located, "float32")
        assert plan.config is None  # transformers reads quantization_config from config.json
        assert plan.checkpoint.method == "gptq" and plan.label == "gptq-4bit"
        assert 4 < plan.weight_bits < 4.2


@pytest.mark.parametrize("wanted", ["nf4", "int8", "awq"])
def test_conflicting_quant_is_one_clear_line(tmp_path, wanted):
    located = _checkpoint(tmp_path, GPTQ)
    with pytest.raises(UsageError) as caught:
        quant.plan_quantization(ModelSpec(source=str(located.path), quant=wanted), located, "float32")
    line = str(caught.value)
    assert "\n" not in line
    assert "already quantized (GPTQ 4-bit, group size 128)" in line
    assert f"--quant {wanted} cannot be applied" in line and "--quant gptq" in line


def test_gptq_on_a_plain_checkpoint_says_what_to_do(tmp_path):
    located = _checkpoint(tmp_path, None)
    with pytest.raises(UsageError) as caught:
        quant.plan_quantization(ModelSpec(source=str(located.path), quant="gptq"), located, "float32")
    assert "not one" in str(caught.value) and "--quant nf4 or int8" in str(caught.value)


def test_gguf_cannot_be_quantized_again(tmp_path):
    with pytest.raises(UsageError, match="GGUF"):
        quant.plan_quantization(ModelSpec(quant="int8"), Located(tmp_path, "m.gguf"), "float32")


def test_missing_packages_name_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(quant, "installed", lambda name: False)
    plain = _checkpoint(tmp_path, None, "plain")
    with pytest.raises(MissingPackageError) as caught:
        quant.plan_quantization(ModelSpec(quant="nf4"), plain, "float32")
    assert "pip install 'llm-tui[bnb]'" in str(caught.value) and "\n" not in str(caught.value)
    gptq = _checkpoint(tmp_path, GPTQ, "gptq")
    with pytest.raises(MissingPackageError) as caught:
        quant.plan_quantization(ModelSpec(), gptq, "float32")
    assert "gptqmodel and optimum" in str(caught.value) and "pip install 'llm-tui[quant]'" in str(caught.value)
    awq = _checkpoint(tmp_path, AWQ, "awq")
    with pytest.raises(MissingPackageError, match=r"llm-tui\[quant\]"):
        quant.plan_quantization(ModelSpec(), awq, "float32")


def test_bitsandbytes_without_cpu_kernels_names_the_device(tmp_path, monkeypatch):
    monkeypatch.setattr(quant, "installed", lambda name: True)
    monkeypatch.setattr(quant, "package_version", lambda name: (0, 43, 1))
    with pytest.raises(ModelLoadError) as caught:
        quant.plan_quantization(ModelSpec(quant="int8"), _checkpoint(tmp_path, None), "float32", on_gpu=False)
    assert "bitsandbytes >= 0.46" in str(caught.value) and "NVIDIA GPU" in str(caught.value)
    plan = quant.plan_quantization(ModelSpec(quant="int8"), _checkpoint(tmp_path, None, "x"), None, on_gpu=True)
    assert plan.method == "int8"


def test_bnb_config_takes_double_quant_and_compute_dtype(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(quant, "installed", lambda name: True)
    spec = SimpleNamespace(quant="nf4", bnb_double_quant=True, bnb_compute_dtype="bf16", label="x")
    plan = quant.plan_quantization(spec, _checkpoint(tmp_path, None), torch.float32)
    config = plan.config
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant is True and config.bnb_4bit_compute_dtype == torch.bfloat16
    assert plan.label == "nf4+dq" and plan.weight_bits < 4.2
    default = quant.plan_quantization(ModelSpec(quant="fp4"), _checkpoint(tmp_path, None, "y"), torch.float32)
    assert default.config.bnb_4bit_compute_dtype == torch.float32  # the load dtype unless told otherwise
    eight = quant.plan_quantization(ModelSpec(quant="int8"), _checkpoint(tmp_path, None, "z"), torch.float32)
    assert eight.config.load_in_8bit and eight.weight_bits == 8.0
    with pytest.raises(UsageError, match="compute dtype"):
        quant.bnb_compute_dtype(SimpleNamespace(bnb_compute_dtype="fp8"), torch.float32)


def test_effective_bits():
    assert quant.effective_bits("nf4") == 4.5
    assert quant.effective_bits("nf4", double_quant=True) == pytest.approx(4.127, abs=1e-3)
    assert quant.effective_bits("int8") == 8.0
    assert quant.effective_bits("gptq", bits=4, group_size=128) == pytest.approx(4.156, abs=1e-3)
    assert quant.effective_bits("gptq", bits=8, group_size=-1) == 8.0


def _bnb_ready() -> str | None:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as err:  # not installed, or its native library does not load here
        return f"bitsandbytes is not usable here ({type(err).__name__}: {err}); pip install 'llm-tui[bnb]'"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_default_model_quantized_answers_paris(mode, demo_dir, caplog):
    """The real default model quantized while loading, on the CPU: greedy answer, smaller footprint."""
    reason = _bnb_ready()
    if reason:
        pytest.skip(reason)
    from backends.checkpoint.locate import locate
    from backends.core.params import SamplingParams
    from backends.generation.open import open_model
    from backends.loading.preflight import memory_verdict as check_before_load
    from backends.memory.weights import estimate_weights

    spec = ModelSpec(quant=mode)
    handle = open_model(spec)
    try:
        generation = handle.stream(PARIS, SamplingParams(temperature=0, max_new_tokens=6))
        list(generation)
        done = generation.done
        assert done.error is None, done.error
        assert "Paris" in done.text
        fp32 = estimate_weights(demo_dir, dtype="float32").bytes
        footprint = handle.info.footprint_bytes
        limit = 0.35 if mode == "nf4" else 0.45  # measured: ~166 MB and ~220 MB against ~538 MB
        assert 0 < footprint < fp32 * limit
        estimate = check_before_load(spec, locate(spec)).weights_bytes
        assert abs(estimate - footprint) / footprint < 0.2
        from bitsandbytes.nn import Linear4bit, Linear8bitLt

        layer = handle.model.model.layers[0].self_attn.q_proj
        assert isinstance(layer, Linear4bit if mode == "nf4" else Linear8bitLt)
        assert not [r for r in caplog.records if "inputs will be cast" in r.getMessage()]
    finally:
        handle.unload()


_GPTQ_SCRIPT = textwrap.dedent("""
    import json, sys
    from backends.generation.open import open_model
    from backends.core.errors import UsageError
    from backends.core.params import SamplingParams
    from backends.core.spec import ModelSpec
    from gptqmodel import GPTQModel, QuantizeConfig

    source, target = sys.argv[1], sys.argv[2]
    model = GPTQModel.load(source, QuantizeConfig(bits=4, group_size=32, offload_to_disk=False), device="cpu")
    texts = ["The capital of France is Paris. " * 4, "Hello, how are you today? I am fine, thanks.",
             "One two three four five six seven eight nine ten."] * 4
    model.quantize(texts, batch_size=1)
    model.save(target)
    del model
    plain = open_model(ModelSpec(source=source))
    handle = open_model(ModelSpec(source=target))
    generation = handle.stream([{"role": "user", "content": "Hi"}], SamplingParams(temperature=0, max_new_tokens=4))
    list(generation)
    try:
        open_model(ModelSpec(source=target, quant="nf4"))
        conflict = None
    except UsageError as err:
        conflict = str(err)
    layer = handle.model.model.layers[0].self_attn.q_proj
    print("RESULT " + json.dumps({
        "error": generation.done.error, "new_tokens": generation.done.stats.new_tokens,
        "footprint": handle.info.footprint_bytes, "plain_footprint": plain.info.footprint_bytes,
        "layer": type(layer).__name__, "conflict": conflict,
    }))
""")


def _gptq_ready() -> str | None:
    import importlib.util

    for name in ("gptqmodel", "optimum"):
        if importlib.util.find_spec(name) is None:
            return (f"{name} is not installed: pip install 'llm-tui[quant]' (gptqmodel 7.x requires torch>=2.14.1, "
                    "which replaces the CPU build of torch this environment pins)")
    return None


def test_gptq_checkpoint_quantized_on_cpu_loads_and_generates(demo_dir, tmp_path):
    reason = _gptq_ready()
    if reason:
        pytest.skip(reason)
    from conftest import build_tiny_model

    tiny_model_dir = build_tiny_model(demo_dir, tmp_path / "tiny", layers=2, hidden=256)
    env = dict(os.environ, GPTQMODEL_CPU_WORKERS=os.environ.get("GPTQMODEL_CPU_WORKERS", "2"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    target = tmp_path / "tiny-gptq"
    result = subprocess.run([sys.executable, "-c", _GPTQ_SCRIPT, str(tiny_model_dir), str(target)],
                            capture_output=True, text=True, env=env, timeout=300, cwd=str(ROOT))
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    data = json.loads(lines[-1][len("RESULT "):])
    assert data["error"] is None and data["new_tokens"] == 4
    assert data["footprint"] < data["plain_footprint"]
    assert "Linear" in data["layer"] and data["layer"] != "Linear"
    assert data["conflict"] and "already quantized (GPTQ 4-bit, group size 32)" in data["conflict"]
    assert json.loads((target / "config.json").read_text())["quantization_config"]["quant_method"] == "gptq"
