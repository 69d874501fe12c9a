"""Quantization plans: how --quant applies to a checkpoint.

bitsandbytes nf4/fp4/int8, GPTQ/AWQ through gptqmodel, a remote-code
checkpoint's own ``quantize(bits)``, pre-quantized checkpoints and GGUF.
Missing packages and devices are reported in one line before any weights load."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from backends.checkpoint.headers import read_checkpoint_config
from backends.checkpoint.own_quantize import OwnQuantize, find_own_quantize
from backends.checkpoint.quantized import (
    CHECKPOINT_METHODS,
    CheckpointQuant,
    checkpoint_quantization,
)
from backends.checkpoint.remote_code import model_class_ref
from backends.core.errors import MissingPackageError, ModelLoadError, UsageError
from backends.core.packages import (
    installed,
    package_version,
)
from backends.core.spec import OWN_LOADING_ENGINES
from backends.memory.weights import effective_bits

#: Quantize-on-load methods (bitsandbytes).
BNB_METHODS = ("nf4", "fp4", "int8")
#: A remote-code checkpoint's own ``quantize(bits)``: ``int4`` only means that; ``int8`` means it
#: when the checkpoint has the method and llm-tui loads it itself, bitsandbytes int8 otherwise.
OWN_METHODS = ("int4", "int8")

#: Which pip extra brings the packages a method needs.
EXTRAS = {"nf4": "bnb", "fp4": "bnb", "int8": "bnb", "bitsandbytes": "bnb", "gptq": "quant", "awq": "quant"}

_DTYPE_NAMES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
                "half": "float16", "fp32": "float32", "float32": "float32", "float": "float32"}


@dataclass(frozen=True)
class QuantPlan:
    """What the loader passes to ``from_pretrained`` and what the memory estimate assumes."""

    #: "none", a BNB_METHODS value, or the checkpoint's method ("gptq", "awq", "bitsandbytes", ...).
    method: str = "none"
    #: A transformers quantization config to pass, or None (none asked, or already in config.json).
    config: object | None = None
    #: Set when the checkpoint is already quantized and is loaded as it is.
    checkpoint: CheckpointQuant | None = None
    #: Stored bits per quantized linear weight, scales included; None when nothing is quantized.
    weight_bits: float | None = None
    double_quant: bool = False
    #: 4 or 8 when the checkpoint's own ``quantize(bits)`` runs after loading (``method`` is "int4"/"int8").
    own_bits: int | None = None

    @property
    def label(self) -> str:
        """Short text for the status bar and ``ModelInfo.quant``: "nf4", "int8", "gptq-4bit", "int4 (own)", "none"."""
        if self.own_bits is not None:
            return f"{self.method} (own)"
        if self.checkpoint is not None and self.checkpoint.loads_quantized:
            name = self.checkpoint.quant_name or self.checkpoint.method
            bits = self.checkpoint.bits
            if name in CHECKPOINT_METHODS and bits:
                return f"{name}-{int(bits)}bit"
            return name
        if self.method in BNB_METHODS and self.double_quant:
            return f"{self.method}+dq"
        return self.method

    @property
    def quantized(self) -> bool:
        return self.weight_bits is not None


def bnb_compute_dtype(spec, load_dtype):
    """The dtype bitsandbytes computes in: the spec's choice, else the load dtype."""
    name = getattr(spec, "bnb_compute_dtype", None)
    if not name or name == "auto":
        return load_dtype
    import torch

    key = _DTYPE_NAMES.get(str(name).lower().replace("torch.", ""))
    if key is None:
        raise UsageError(f"bitsandbytes compute dtype '{name}' is not known", "use bf16, fp16 or fp32")
    return getattr(torch, key)


def bnb_config(method: str, compute_dtype, double_quant: bool = False):
    """A transformers ``BitsAndBytesConfig`` for nf4, fp4 or int8."""
    from transformers import BitsAndBytesConfig

    quiet_bitsandbytes_notices()
    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=method,
                              bnb_4bit_compute_dtype=compute_dtype,
                              bnb_4bit_use_double_quant=bool(double_quant))


class _DropNotice(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in str(record.msg)


#: Notices bitsandbytes logs that say nothing the user can act on, by logger.
_BNB_NOTICES = {
    # on every int8 matmul with fp32 or bf16 inputs: thousands of lines per reply, across the TUI's screen
    "bitsandbytes.autograd._functions": "inputs will be cast",
    # on import, on CPUs with AVX512-BF16: an optional faster kernel from the hub; the built-in one runs
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward",
    # the same kernel, looked up by the kernels package with the hub offline
    "kernels._internals.hf_hub": "Skipping publisher trust check",
}


def quiet_bitsandbytes_notices() -> None:
    """Drop bitsandbytes' notices that say nothing the user can act on (``_BNB_NOTICES``);
    called before bitsandbytes is imported."""
    for name, text in _BNB_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) and f.text == text for f in logger.filters):
            logger.addFilter(_DropNotice(text))


def plan_quantization(spec, located, load_dtype=None, *, on_gpu: bool = False,
                      check_packages: bool = True) -> QuantPlan:
    """Decide how the spec's ``--quant`` applies to this checkpoint; raise one clear line if it cannot.

    ``located`` is a ``loader.Located`` (path and optional GGUF file name).
    """
    wanted = getattr(spec, "quant", "none") or "none"
    double_quant = bool(getattr(spec, "bnb_double_quant", False))
    label = getattr(spec, "label", str(located.path))
    existing = checkpoint_quantization(located.path, getattr(located, "gguf_file", None))

    if existing is not None and existing.loads_quantized:
        name = existing.quant_name
        if wanted != "none" and wanted != name:
            fix = "drop --quant to load it as it is" + (f" (or pass --quant {name})" if name else "")
            raise UsageError(f"'{label}' is already quantized ({existing.detail}); "
                             f"--quant {wanted} cannot be applied on top of it", fix)
        if check_packages:
            require_packages(existing.method, on_gpu=on_gpu, purpose=f"loading '{label}' ({existing.detail})")
        if name == "int8":
            quiet_bitsandbytes_notices()
        bits = effective_bits(name or existing.method, bits=existing.bits, group_size=existing.group_size,
                              double_quant=bool(existing.raw.get("bnb_4bit_use_double_quant")))
        return QuantPlan(method=existing.method, config=None, checkpoint=existing,
                         weight_bits=bits if existing.bits else None)

    if wanted == "none":
        return QuantPlan(checkpoint=existing)
    if wanted in OWN_METHODS:
        own = own_quantize_plan(spec, located, on_gpu=on_gpu, check_packages=check_packages,
                                refuse=wanted == "int4")
        if own is not None:
            return own
    if existing is not None:  # a GGUF file: transformers refuses a quantization config with gguf_file
        raise UsageError(f"--quant {wanted} cannot be applied to the GGUF file '{label}' "
                         "(transformers dequantizes GGUF weights and loads them unquantized)",
                         "drop --quant and pick a smaller --dtype, or give a safetensors checkpoint to quantize")
    if wanted in CHECKPOINT_METHODS:
        raise UsageError(f"--quant {wanted} loads {wanted.upper()} checkpoints, and '{label}' is not one "
                         "(its config.json has no quantization_config)",
                         f"give {'an' if wanted == 'awq' else 'a'} {wanted.upper()} checkpoint, or use --quant nf4 or int8 to quantize while loading")
    if check_packages:
        require_packages(wanted, on_gpu=on_gpu, purpose=f"--quant {wanted}")
    config = None
    if load_dtype is not None:
        config = bnb_config(wanted, bnb_compute_dtype(spec, load_dtype), double_quant)
    return QuantPlan(method=wanted, config=config, checkpoint=existing,
                     weight_bits=effective_bits(wanted, double_quant=double_quant), double_quant=double_quant)


def own_quantize_plan(spec, located, *, on_gpu: bool = False, check_packages: bool = True,
                      refuse: bool = True) -> QuantPlan | None:
    """The plan for the checkpoint's own ``quantize(bits)``, when ``--quant`` means it here.

    None when it does not apply (and ``refuse`` is False: ``int8`` then means
    bitsandbytes); with ``refuse``, one UsageError line saying why it does not.
    Reads the checkpoint's files only; none of its code runs.
    """

    wanted = getattr(spec, "quant", "none")
    label = getattr(spec, "label", str(located.path))
    bits = 4 if wanted == "int4" else 8
    remote = getattr(located, "gguf_file", None) is None and model_class_ref(located.path) is not None
    own = find_own_quantize(located.path) if remote else None
    engine = getattr(spec, "engine", "auto")
    if own is not None and engine in OWN_LOADING_ENGINES:
        quant_bit = read_checkpoint_config(located.path).get("quantization_bit")
        if isinstance(quant_bit, int) and quant_bit > 0:
            raise UsageError(f"'{label}' is already quantized to {quant_bit} bits by its own code "
                             "(config.json quantization_bit)", "drop --quant to load it as it is")
        if check_packages:
            require_own_quantize(own, bits, device="cuda" if on_gpu else "cpu", label=label)
        if "bitsandbytes" in own.packages(bits):  # Baichuan2's quantizer is bitsandbytes
            quiet_bitsandbytes_notices()
        return QuantPlan(method=wanted, weight_bits=effective_bits(wanted), own_bits=bits)
    if not refuse:
        return None
    if own is not None:  # a quantize() of its own, but from_pretrained loads it
        raise UsageError(f"--quant {wanted} runs the own quantize({bits}) of '{label}', which needs llm-tui "
                         f"to load it itself, not --engine {engine}",
                         "use --engine auto, loop or native, or --quant nf4 with --engine generate")
    if remote:
        raise UsageError(f"--quant {wanted} is a checkpoint's own quantize({bits}) (ChatGLM2/3, Baichuan), and "
                         f"the model class of '{label}' has none", "use --quant nf4 or fp4 (bitsandbytes 4-bit)")
    raise UsageError(f"--quant {wanted} is a remote-code checkpoint's own quantize({bits}) (ChatGLM2/3, "
                     f"Baichuan with --trust-remote-code); '{label}' is not one",
                     "use --quant nf4 or fp4 (bitsandbytes 4-bit) for other models")


#: bitsandbytes releases before this one have no CPU kernels.
BNB_CPU_SINCE = (0, 46)


def require_packages(method: str, *, on_gpu: bool, purpose: str) -> None:
    """Raise MissingPackageError (naming the extra) or ModelLoadError (naming the device) when unmet."""
    if method in BNB_METHODS or method == "bitsandbytes":
        if not installed("bitsandbytes"):
            raise MissingPackageError("bitsandbytes", purpose, extra="bnb")
        if not on_gpu and package_version("bitsandbytes") < BNB_CPU_SINCE:
            have = ".".join(map(str, package_version("bitsandbytes")))
            raise ModelLoadError(f"{purpose} on the CPU needs bitsandbytes >= 0.46 (installed: {have})",
                                 "run: pip install -U 'llm-tui[bnb]', or use an NVIDIA GPU (--device-map cuda:0)")
        return
    if method == "gptq":
        missing = [name for name in ("gptqmodel", "optimum") if not installed(name)]
        if missing:
            raise MissingPackageError(" and ".join(missing), purpose, extra="quant")
        return
    if method == "awq":
        if not installed("gptqmodel"):
            raise MissingPackageError("gptqmodel", purpose, extra="quant")
        return
    if "fp8" in method and not on_gpu:
        raise ModelLoadError(f"{purpose} needs a GPU with FP8 support", "run on a CUDA GPU (--device-map cuda:0)")


def explain_error(err: BaseException, plan: QuantPlan, on_gpu: bool) -> tuple[str, str] | None:
    """(problem, fix) for a quantization failure raised by transformers or a kernel, else None."""
    text = str(err)
    lowered = text.lower()
    method = plan.checkpoint.method if plan.checkpoint is not None else plan.method
    if method == "none":
        return None
    first = text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__
    if "gpu is required" in lowered or ("cuda" in lowered and not on_gpu and
                                         ("not available" in lowered or "no cuda" in lowered
                                          or "compiled with cuda" in lowered)):
        extra = EXTRAS.get(method, "quant")
        return (f"{plan.label} needs a CUDA GPU here ({first})",
                f"run on a machine with an NVIDIA GPU, or install the CPU kernels: pip install 'llm-tui[{extra}]'")
    if isinstance(err, ImportError) or ("requires" in lowered and "install" in lowered):
        extra = EXTRAS.get(method, "quant")
        return (f"{plan.label} needs a package that is missing ({first})", f"run: pip install 'llm-tui[{extra}]'")
    return None


def require_own_quantize(own: OwnQuantize, bits: int, *, device: str, label: str) -> None:
    """Raise one line naming the device or the package the own ``quantize(bits)`` needs and lacks."""
    purpose = f"--quant int{bits} (the own quantize({bits}) of '{label}')"
    reason = own.cuda_reason(bits)
    if reason is not None and not str(device).startswith("cuda"):
        other = 8 if bits == 4 else 4
        alternative = f", or --quant int{other}" if own.cuda_reason(other) is None else ""
        raise ModelLoadError(f"{purpose} needs an NVIDIA GPU: {reason}",
                             f"run it on a CUDA GPU (--device-map cuda:0){alternative}, or load it unquantized "
                             "(--quant none)")
    for name in own.packages(bits):
        if name == "bitsandbytes":  # the extra to install, and the version with CPU kernels
            require_packages("int8", on_gpu=str(device).startswith("cuda"), purpose=purpose)
        elif not installed(name):
            raise MissingPackageError(name, purpose)
