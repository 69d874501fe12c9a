"""--quant int4/int8 on a remote-code checkpoint with its own quantize(bits) (the ChatGLM2/3 and Baichuan way).

The checkpoints are llm-tui's own stand-ins (tests/remote_standins): a model class
with a ``quantize(bits)`` that really stores its linear weights as int8 / packed
int4 with one scale per row, loaded with trust_remote_code=True like a real one.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backends.checkpoint.locate import Located
from backends.core.errors import (
    MissingPackageError,
    ModelLoadError,
    RemoteCodeRefused,
    UsageError,
)
from backends.core.events import DoneEvent, TokenEvent
from backends.core.params import SamplingParams
from backends.core.spec import QUANT_CHOICES, ModelSpec
from backends.loading import quant

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "Name three colours."}]
GREEDY = SamplingParams(temperature=0, max_new_tokens=6)
SHAPE = {"hidden_size": 64, "intermediate_size": 1024}  # the blocks' linear layers weigh something


@pytest.fixture(scope="module")
def quant_dir(tmp_path_factory):
    from remote_standins import make_tinyqwen_dir

    return make_tinyqwen_dir(tmp_path_factory.mktemp("tinyquant"), own_quantize=True, **SHAPE)


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    from remote_standins import make_tinyqwen_dir

    return make_tinyqwen_dir(tmp_path_factory.mktemp("tinyqwen-noquant"))


def _spec(path, **kw):
    return ModelSpec(source=str(path), trust_remote_code=True, **kw)


def _open(path, **kw):
    from backends.generation.open import open_model

    lines: list[str] = []
    handle = open_model(_spec(path, **kw), lambda message, fraction=None: lines.append(message))
    return handle, lines


def _copy(src: Path, dst: Path, *, weights: bool = True) -> Path:
    ignore = ["__pycache__"] + ([] if weights else ["*.safetensors"])
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*ignore))
    return dst


def _linear_bytes(bits: int, out_features: int, in_features: int) -> int:
    """What one stand-in RowQuantLinear stores: the integers and one fp32 scale per row."""
    columns = in_features if bits == 8 else (in_features + 1) // 2
    return out_features * columns + out_features * 4


def _last_logits(model, ids):
    import torch

    from backends.loading.forward_call import ForwardCall, split_output

    with torch.inference_mode():
        return split_output(ForwardCall.for_model(model)(model, torch.tensor([ids]), None, 0))[0][0, -1].float()


def test_int4_is_a_quant_choice_with_its_own_bits():
    assert "int4" in QUANT_CHOICES and ModelSpec(quant="int4").quant == "int4"
    assert quant.OWN_METHODS == ("int4", "int8")
    assert 4 < quant.effective_bits("int4") < 4.2
    assert quant.QuantPlan(method="int4", weight_bits=4.1, own_bits=4).label == "int4 (own)"


def test_the_method_and_what_it_imports_are_read_from_the_files(quant_dir, plain_dir):
    from backends.checkpoint.own_quantize import find_own_quantize

    own = find_own_quantize(quant_dir)
    assert own.class_name == "TinyQuantLMHeadModel"
    assert own.params == ("bits", "empty_init", "device", "kwargs")
    assert own.files == ("quantization_tiny.py",)
    assert own.required == ("torch",) and own.optional == ()
    assert own.cuda_reason(4) is None and own.cuda_reason(8) is None
    assert find_own_quantize(plain_dir) is None  # Qwen-v1-like: no quantize of its own


@pytest.mark.parametrize("wanted, bits", [("int8", 8), ("int4", 4)])
def test_own_quantize_runs_shrinks_the_weights_and_the_model_answers(quant_dir, wanted, bits):
    import torch

    from backends.generation.runners.loop import LoopRunner
    from backends.loading.remote.ownquant import weights_bytes

    full, _ = _open(quant_dir)
    handle, lines = _open(quant_dir, quant=wanted)
    assert isinstance(handle.runner, LoopRunner)
    assert handle.info.quant == f"{wanted} (own)"
    blocks = handle.model.transformer.h
    layers = [m for m in handle.model.modules() if type(m).__name__ == "RowQuantLinear"]
    assert len(layers) == 5 * len(blocks) and all(m.bits == bits for m in layers)
    assert all(m.qweight.dtype in (torch.int8, torch.uint8) for m in layers)
    assert not any(isinstance(m, torch.nn.Linear) for b in blocks for m in b.modules())
    assert handle.model.config.quantization_bit == bits

    linears = [m for b in full.model.transformer.h for m in b.modules() if isinstance(m, torch.nn.Linear)]
    saved = sum(m.weight.numel() * 4 - _linear_bytes(bits, m.out_features, m.in_features) for m in linears)
    assert weights_bytes(full.model) - weights_bytes(handle.model) == saved  # biases stay as they were
    assert handle.info.footprint_bytes < full.info.footprint_bytes
    assert f"quantizing {handle.info.label} with its own quantize({bits})" in lines
    report = [line for line in lines if f"its own quantize({bits}) took the weights from" in line]
    assert len(report) == 1 and "\n" not in report[0]

    generation = handle.stream(MESSAGES, GREEDY)
    events = list(generation)
    done = events[-1]
    assert isinstance(done, DoneEvent) and done.error is None
    assert done.stats.new_tokens == GREEDY.max_new_tokens
    assert len([e for e in events if isinstance(e, TokenEvent)]) == GREEDY.max_new_tokens
    assert done.captured_ids == done.prompt_ids  # the quantized model received exactly the preview

    ids = handle.render(MESSAGES).ids
    quantized, reference = _last_logits(handle.model, ids), _last_logits(full.model, ids)
    similarity = torch.nn.functional.cosine_similarity(quantized, reference, dim=0)
    assert similarity > (0.999 if bits == 8 else 0.8)  # close to the original, far from unrelated (~0)
    assert not torch.equal(quantized, reference)


def test_int4_needs_a_quantize_of_the_checkpoints_own(plain_dir, tmp_path):
    from backends.generation.open import open_model

    with pytest.raises(UsageError) as caught:
        open_model(_spec(plain_dir, quant="int4"))
    line = str(caught.value)
    assert "\n" not in line and "has none" in line and "nf4" in line

    native = tmp_path / "native"  # a transformers-native checkpoint: int4 is not a thing for it
    native.mkdir()
    (native / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(UsageError, match="is not one") as caught:
        quant.plan_quantization(ModelSpec(source=str(native), quant="int4"), Located(native), "float32")
    assert "nf4 or fp4" in str(caught.value) and "\n" not in str(caught.value)


def test_int8_without_a_quantize_of_its_own_is_still_bitsandbytes(plain_dir, tmp_path):
    plan = quant.plan_quantization(_spec(plain_dir, quant="int8"), Located(plain_dir), None, check_packages=False)
    assert plan.own_bits is None and plan.method == "int8" and plan.label == "int8"
    from backends.loading.remote.load import load_remote

    with pytest.raises(ModelLoadError, match="not available when llm-tui loads"):
        load_remote(_spec(plain_dir, quant="int8"), Located(plain_dir))


def test_int4_with_engine_generate_says_to_let_llm_tui_load_it(quant_dir):
    from backends.generation.open import open_model

    with pytest.raises(UsageError) as caught:
        open_model(_spec(quant_dir, quant="int4", engine="generate"))
    assert "--engine generate" in str(caught.value) and "--engine auto" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_consent_is_still_required(quant_dir):
    from backends.generation.open import open_model
    from backends.loading.remote.load import load_remote

    with pytest.raises(RemoteCodeRefused, match="--trust-remote-code"):
        open_model(ModelSpec(source=str(quant_dir), quant="int4"))
    with pytest.raises(RemoteCodeRefused):
        load_remote(ModelSpec(source=str(quant_dir), quant="int4"), Located(quant_dir))


def _with_quantization_line(src: Path, dst: Path, line: str, *, weights: bool = False) -> Path:
    folder = _copy(src, dst, weights=weights)
    code = folder / "quantization_tiny.py"
    code.write_text(code.read_text().replace("def quantize_blocks(blocks, bits: int, device=None):\n",
                                             "def quantize_blocks(blocks, bits: int, device=None):\n" + line))
    return folder


def test_a_missing_package_is_named_before_any_weights_are_read(quant_dir, tmp_path):
    from backends.generation.open import open_model

    folder = _copy(quant_dir, tmp_path / "needs-package", weights=False)  # no weights: they must not be needed
    code = folder / "quantization_tiny.py"
    code.write_text(code.read_text().replace("import torch\n", "import torch\nimport llm_tui_no_such_kernels\n", 1))
    for wanted in ("int4", "int8"):
        with pytest.raises(MissingPackageError) as caught:
            open_model(_spec(folder, quant=wanted))
        line = str(caught.value)
        assert "'llm_tui_no_such_kernels'" in line and "pip install llm_tui_no_such_kernels" in line
        assert f"quantize({wanted[-1]})" in line and "\n" not in line


def _with_cpm_kernels(src: Path, dst: Path) -> Path:
    """The stand-in importing cpm_kernels in a try block, as ChatGLM's quantization.py does."""
    folder = _copy(src, dst, weights=False)
    code = folder / "quantization_tiny.py"
    code.write_text(code.read_text().replace(
        "import torch\n", "import torch\n\ntry:\n    import cpm_kernels  # noqa: F401\nexcept Exception:\n"
                          "    cpm_kernels = None\n", 1))
    return folder


def test_cpm_kernels_mean_a_gpu_for_int4_only(quant_dir, tmp_path):
    import torch

    from backends.checkpoint.own_quantize import find_own_quantize
    from backends.generation.open import open_model
    from backends.loading.quant import require_own_quantize as require

    folder = _with_cpm_kernels(quant_dir, tmp_path / "kernels")
    own = find_own_quantize(folder)
    assert own.optional == ("cpm_kernels",) and own.packages(4)[-1] == "cpm_kernels"
    assert "cpm_kernels" not in own.packages(8) and own.cuda_reason(8) is None
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError) as caught:  # installing cpm_kernels would not help on the CPU
            open_model(_spec(folder, quant="int4"))
        line = str(caught.value)
        assert "needs an NVIDIA GPU" in line and "cpm_kernels" in line and "--quant int8" in line
        assert "\n" not in line
    if importlib.util.find_spec("cpm_kernels") is None:  # on a GPU machine without the package
        with pytest.raises(MissingPackageError, match="pip install cpm_kernels"):
            require(own, 4, device="cuda:0", label="kernels")
    require(own, 8, device="cpu", label="kernels")  # int8 needs neither
    with pytest.raises(ModelLoadError, match="has no weights"):  # so int8 goes on to read the weights
        open_model(_spec(folder, quant="int8"))


def test_a_gpu_need_is_named_before_any_weights_are_read(quant_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here")
    from backends.generation.open import open_model

    folder = _with_quantization_line(quant_dir, tmp_path / "needs-gpu",
                                     "    device = torch.cuda.current_device()\n")
    for wanted in ("int4", "int8"):
        with pytest.raises(ModelLoadError) as caught:
            open_model(_spec(folder, quant=wanted))
        line = str(caught.value)
        assert "needs an NVIDIA GPU" in line and "quantization_tiny.py" in line and "--device-map cuda:0" in line
        assert "\n" not in line
    with pytest.raises(ModelLoadError, match="has no weights"):  # unquantized, the same files load as usual
        open_model(_spec(folder))


def test_a_failing_quantize_is_one_line_and_the_cli_keeps_its_exit_code(quant_dir, tmp_path):
    from backends.generation.open import open_model

    folder = _with_quantization_line(quant_dir, tmp_path / "broken", "    raise RuntimeError('no kernel for this')\n",
                                     weights=True)
    with pytest.raises(ModelLoadError) as caught:
        open_model(_spec(folder, quant="int8"))
    line = str(caught.value)
    assert "could not quantize it to 8 bits: RuntimeError: no kernel for this" in line and "\n" not in line

    result = subprocess.run([sys.executable, "-m", "tui.cli", "run", str(folder), "-p", "hi", "--quant", "int8",
                             "--trust-remote-code", "--max-new-tokens", "2"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    errors = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(errors) == 1 and errors[0].startswith("llm-tui: error:") and "no kernel for this" in errors[0]


def test_a_quantized_model_that_does_not_run_fails_at_load(quant_dir, tmp_path):
    """A quantize that leaves the model unable to run (as ChatGLM's int4 does in bf16) fails while loading."""
    from backends.generation.open import open_model

    folder = _copy(quant_dir, tmp_path / "no-run")
    code = folder / "quantization_tiny.py"
    code.write_text(code.read_text().replace(
        "    def forward(self, x):\n",
        "    def forward(self, x):\n        assert x.dtype in (torch.float16, torch.bfloat16)\n"))
    with pytest.raises(ModelLoadError) as caught:
        open_model(_spec(folder, quant="int4"))
    line = str(caught.value)
    assert "does not run on cpu in float32: AssertionError" in line and "--dtype fp16" in line
    assert "\n" not in line


def test_the_memory_estimate_counts_the_own_quantization(quant_dir):
    from backends.checkpoint.own_quantize import find_own_quantize
    from backends.loading.preflight import memory_verdict as check_before_load
    from backends.memory.weights import estimate_weights

    assert find_own_quantize(quant_dir) is not None
    located = Located(quant_dir)
    full = estimate_weights(quant_dir, dtype="float32")
    four = estimate_weights(quant_dir, dtype="float32", quant_bits=quant.effective_bits("int4"))
    assert four.bytes < full.bytes and four.quantized_elements > 0
    plan = quant.plan_quantization(_spec(quant_dir, quant="int4"), located, None, check_packages=False)
    assert plan.own_bits == 4 and plan.weight_bits == quant.effective_bits("int4")
    # on the CPU the quantize runs on the weights loaded in full: the peak is counted
    verdict = check_before_load(_spec(quant_dir, quant="int4", device_map="cpu"), located)
    assert verdict.weights_bytes == check_before_load(_spec(quant_dir, device_map="cpu"), located).weights_bytes


def test_already_quantized_by_its_own_code_is_refused(quant_dir, tmp_path):
    folder = _copy(quant_dir, tmp_path / "prequantized", weights=False)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_bit"] = 4  # how ChatGLM's -int4 checkpoints say so
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="already quantized to 4 bits by its own code"):
        quant.plan_quantization(_spec(folder, quant="int8"), Located(folder), None)


def test_config_and_command_line_accept_int4(tmp_path):
    from backends.storage.config import load_config
    from tui.cli import command_parser

    file = tmp_path / "config.toml"
    file.write_text('[defaults]\nquant = "int4"\n\n[models.glm]\npath = "/models/chatglm3-6b"\nquant = "int4"\n'
                    "trust_remote_code = true\n", encoding="utf-8")
    config = load_config(file)
    assert config.defaults.quant == "int4" and config.model_spec("glm").quant == "int4"
    args = command_parser("run").parse_args(["/models/chatglm3-6b", "-p", "hi", "--quant", "int4"])
    assert args.quant == "int4"
    assert "quantize(4|8)" in command_parser("run").format_help()
