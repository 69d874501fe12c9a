"""Load a checkpoint with transformers' from_pretrained.

``load()`` places the weights, picks the dtype, asks ``loading.quant`` how
``--quant`` applies, asks ``loading.preflight`` whether it fits, and turns
every failure, running out of memory included, into one line."""

from __future__ import annotations

import os
from dataclasses import dataclass

from backends.checkpoint.consent import require_consent
from backends.checkpoint.locate import (
    Located,
    locate,
)
from backends.checkpoint.quantized import checkpoint_quantization
from backends.core.errors import (
    WARNING,
    MissingPackageError,
    ModelLoadError,
    UsageError,
    first_line,
    is_out_of_memory,
)
from backends.core.progress import Progress
from backends.core.spec import ModelSpec
from backends.core.units import format_bytes
from backends.hardware.devices import describe_device
from backends.hardware.dtype import resolve_dtype
from backends.hardware.placement import placement
from backends.hardware.release import release_memory
from backends.loading.generation_config import fallback_generation_config, read_generation_config, unloadable
from backends.loading.preflight import memory_verdict
from backends.loading.quant import explain_error, plan_quantization
from backends.memory.verdicts import oom_advice

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class Loaded:
    model: object
    tokenizer: object
    located: Located
    device: str
    dtype: str
    #: Short quantization label: "none", "nf4", "int8", "gptq-4bit" ...
    quant: str = "none"
    #: The pre-load memory verdict (None when it could not be estimated).
    memory: object | None = None


def load(spec: ModelSpec, progress: Progress | None = None) -> Loaded:
    """Load tokenizer and weights; every failure becomes one ModelLoadError line.

    Before the weights are read, the memory they need is compared with what
    is free (``preflight.memory_verdict``): a load that cannot fit is
    refused with the numbers, one that is tight is reported through
    ``progress``. Running out of memory anyway releases what was allocated
    and says what to change.
    """
    progress = progress or (lambda message, fraction=None: None)
    located = locate(spec, progress)
    require_consent(located.path, spec)
    progress(f"loading {spec.label}", None)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging


    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    place = placement(spec)
    existing = checkpoint_quantization(located.path, located.gguf_file)
    dtype = resolve_dtype(spec, place.on_gpu, existing)
    plan = plan_quantization(spec, located, dtype, on_gpu=place.on_gpu)
    verdict = _memory_verdict(spec, located, dtype, plan)
    if verdict is not None:
        verdict.raise_if_refused()
        if verdict.level == "warn":
            progress(WARNING + verdict.line, None)  # a warning stays on screen past the progress lines
    kwargs: dict = {"dtype": dtype, "device_map": place.device_map, "trust_remote_code": spec.trust_remote_code}
    if located.gguf_file:
        kwargs["gguf_file"] = located.gguf_file
    if plan.config is not None:
        kwargs["quantization_config"] = plan.config
    if place.max_memory:
        kwargs["max_memory"] = place.max_memory
    folder = str(located.path)
    _, unread = read_generation_config(located.path) if not located.gguf_file else (None, None)
    if unread:
        # from_pretrained would drop it silently or fail blaming the weights: say so, and give it
        # what it builds for a checkpoint without the file.
        progress(unloadable(spec.label, unread), None)
        kwargs["generation_config"] = fallback_generation_config(located.path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            folder, trust_remote_code=spec.trust_remote_code,
            **({"gguf_file": located.gguf_file} if located.gguf_file else {}))
    except Exception as err:
        raise ModelLoadError(f"could not load the tokenizer from '{folder}': {first_line(err)}",
                             "check that the directory has tokenizer files (tokenizer.json or tokenizer.model)") from None
    failure: tuple[str, str] | None = None
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (ModelLoadError, MissingPackageError, UsageError):
        raise
    except Exception as err:
        failure = _load_failure(err, spec, plan, verdict, place.on_gpu)
    if failure is not None:
        # Outside the except block: the traceback and the half-built model are gone,
        # so their memory can really be returned.
        release_memory()
        raise ModelLoadError(*failure)
    model.eval()
    return Loaded(model, tokenizer, located, device=describe_device(model),
                  dtype=str(dtype).replace("torch.", ""), quant=plan.label, memory=verdict)


def _memory_verdict(spec, located, dtype, plan):
    """The pre-load check; an estimate that cannot be made never blocks a load."""
    try:
        return memory_verdict(spec, located, dtype=dtype, plan=plan)
    except Exception:
        return None


def _load_failure(err: BaseException, spec: ModelSpec, plan, verdict, on_gpu: bool) -> tuple[str, str]:
    """(problem, fix) for a failed from_pretrained: out of memory, quantization kernels, packages, the rest."""

    if is_out_of_memory(err):
        numbers = ""
        if verdict is not None and verdict.free_bytes is not None:
            numbers = (f" (needs ~{format_bytes(verdict.needed_bytes)}, {format_bytes(verdict.free_bytes)} "
                       f"was free on {','.join(verdict.devices)})")
        return f"out of memory while loading '{spec.label}'{numbers}", oom_advice(plan, on_gpu, spec)
    explained = explain_error(err, plan, on_gpu)
    if explained is not None:
        return explained
    if isinstance(err, ImportError):
        return (f"loading '{spec.label}' needs a package that is missing: {first_line(err)}",
                "install the package named above")
    return (f"could not load the weights of '{spec.label}': {first_line(err)}",
            "the checkpoint may be corrupt or truncated: re-download or re-convert it")
