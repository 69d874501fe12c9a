"""Load a remote-code checkpoint without ``from_pretrained``.

With transformers 5, ``from_pretrained(trust_remote_code=True)`` fails for
ChatGLM3 and Baichuan2 and, worse, loads Qwen v1 without error but with its
computed buffers uninitialised. This path avoids the loading machinery:

1. the checkpoint's config and model classes are imported through
   transformers' dynamic-module utilities (its import check included), after
   the fixes in :mod:`backends.remote.fixes` are installed;
2. the model class is instantiated on the CPU in the requested dtype (not on
   the meta device), so ``__init__`` computes every buffer for real;
3. the weights are read here from safetensors (or ``.bin`` with
   ``weights_only=True``), sharded or not; missing tensors are one error line;
4. the buffer guard compares the computed buffers with a fresh instance;
5. with ``--quant int4``/``int8`` and a model class that has its own
   ``quantize(bits)`` (ChatGLM2/3, Baichuan), that method runs (what it needs
   is checked from the files before step 1: :mod:`backends.remote.ownquant`);
6. the model moves to its device (a quantized one always: bitsandbytes-based
   quantizers finish there), and a quantized one runs one token to prove it.

Nothing here decides whether remote code may run: the caller checks consent
first, and :func:`load_remote` checks it again.
"""

from __future__ import annotations

import re
from pathlib import Path

from backends.checkpoint.consent import require_consent
from backends.checkpoint.locate import Located
from backends.checkpoint.remote_code import model_class_ref
from backends.checkpoint.weight_files import weight_files
from backends.core.errors import MissingPackageError, ModelLoadError, first_line
from backends.core.files import read_json
from backends.core.progress import Progress
from backends.core.spec import ModelSpec
from backends.core.units import format_bytes
from backends.hardware.devices import describe_device
from backends.hardware.dtype import resolve_dtype
from backends.hardware.placement import resolve_device_map
from backends.loading.generation_config import read_generation_config, unloadable
from backends.loading.preflight import memory_verdict
from backends.loading.quant import plan_quantization
from backends.loading.remote import fixes
from backends.loading.remote.buffers import guard_buffers, skip_weight_init
from backends.loading.remote.ownquant import (
    check_runs,
    run_quantize,
    weights_bytes,
)
from backends.loading.transformers_loader import Loaded


def load_remote(spec: ModelSpec, located: Located, progress: Progress | None = None, *,
                with_tokenizer: bool = False, generation_mixin: bool = False) -> Loaded:
    """Build the checkpoint's model class on the CPU, load its weights, guard its buffers, move it.

    ``with_tokenizer``: also load the checkpoint's own tokenizer (the native
    streaming methods take it); otherwise ``Loaded.tokenizer`` is None, as the
    prompt family tokenises without the checkpoint's code.
    ``generation_mixin``: give the class ``generate()`` the way transformers'
    own remote-code loading does (needed by methods that call it).
    """
    progress = progress or (lambda message, fraction=None: None)
    path = located.path
    require_consent(path, spec)
    device = _single_device(spec)
    plan = None
    if spec.quant != "none":
        plan = plan_quantization(spec, located, None, on_gpu=device.startswith("cuda"))
        if plan.own_bits is None:
            raise ModelLoadError(f"--quant {spec.quant} is not available when llm-tui loads '{spec.label}' itself",
                                 "use --engine generate (transformers' own loading) to quantize it")
    if read_json(path / "config.json").get("quantization_config"):
        raise ModelLoadError(f"'{spec.label}' is a pre-quantized checkpoint",
                             "use --engine generate (transformers' own loading) for it")
    ref = model_class_ref(path)
    if ref is None:
        raise ModelLoadError(f"'{spec.label}' ships no model class of its own (config.json auto_map)",
                             "load it with --engine generate")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    dtype = resolve_dtype(spec, device.startswith("cuda"))
    own_bits = plan.own_bits if plan is not None else None
    if own_bits and spec.dtype == "auto" and device.startswith("cuda"):
        dtype = torch.float16  # as the vendors' READMEs run it; ChatGLM's int4 kernels have no bf16 entry
    verdict = memory_verdict(spec, located, dtype=dtype, plan=plan)
    verdict.raise_if_refused()
    if verdict.level == "warn":
        progress(verdict.line, None)
    progress(f"loading {spec.label} (its own model code)", None)
    fixes.install_import_standins()
    config, model_cls = _import_classes(path, ref, spec)
    fixes.fix_config(config, dtype)
    fixes.fix_model_classes(model_cls)
    if generation_mixin:
        model_cls = fixes.add_generation_mixin(model_cls)
    model = _build(model_cls, config, dtype, spec)
    progress(f"reading the weights of {spec.label}", None)
    load_weights(model, path, label=spec.label)
    generation, unread = read_generation_config(path)  # as from_pretrained attaches it, custom keys kept
    if generation is not None:
        model.generation_config = generation
    elif unread:  # the class's own defaults stay, and the user hears what was lost
        progress(unloadable(spec.label, unread), None)
    report = guard_buffers(model, label=spec.label)
    for note in report.notes:
        progress(note, None)
    model.eval()
    if own_bits:
        before = weights_bytes(model)
        progress(f"quantizing {spec.label} with its own quantize({own_bits})", None)
        model = run_quantize(model, own_bits, label=spec.label)
        model.eval()
    if device != "cpu" or own_bits:
        try:
            model.to(device)
        except torch.OutOfMemoryError:
            raise ModelLoadError(f"out of memory moving '{spec.label}' to {device}",
                                 "try a smaller --dtype, --device-map cpu, or --engine generate with --quant") from None
    if own_bits:
        after = weights_bytes(model)  # before a forward builds caches some vendors keep (Baichuan's alibi mask)
        check_runs(model, label=spec.label, bits=own_bits, device=device, dtype=dtype)
        progress(f"{spec.label}: its own quantize({own_bits}) took the weights from {format_bytes(before)} "
                 f"to {format_bytes(after)}", None)
    tokenizer = load_vendor_tokenizer(path, spec) if with_tokenizer else None
    return Loaded(model, tokenizer, located, device=describe_device(model), dtype=str(dtype).replace("torch.", ""),
                  quant=plan.label if plan is not None else "none")


def _single_device(spec: ModelSpec) -> str:
    mapping = resolve_device_map(spec)
    if mapping == "cpu":
        return "cpu"
    if mapping == "auto":
        if "," in spec.device_map:
            raise ModelLoadError("the decode loop puts a remote-code checkpoint on one device; "
                                 f"--device-map {spec.device_map} lists several",
                                 "give one device (e.g. cuda:0), or use --engine generate to spread the model")
        return "cuda:0"
    return str(mapping)


def _import_classes(path: Path, ref: str, spec: ModelSpec):
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    auto_map = read_json(path / "config.json").get("auto_map") or {}
    try:
        model_cls = get_class_from_dynamic_module(ref, str(path), local_files_only=True)
        config_ref = auto_map.get("AutoConfig")
        if isinstance(config_ref, str) and "--" not in config_ref:
            config_cls = get_class_from_dynamic_module(config_ref, str(path), local_files_only=True)
            config = config_cls.from_pretrained(str(path), local_files_only=True)
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(str(path), trust_remote_code=True, local_files_only=True)
    except ImportError as err:
        missing = re.search(r"following packages that were not found in your environment: ([^.]+)", str(err))
        if missing:
            names = missing.group(1).strip()
            raise MissingPackageError(names.split(",")[0].strip(), f"the code of '{spec.label}' ({names})") from None
        raise ModelLoadError(f"the code of '{spec.label}' does not import: {first_line(err)}",
                             "install what it names, or use a checkpoint revision made for this transformers") from None
    except Exception as err:
        raise ModelLoadError(f"could not import the code of '{spec.label}': {type(err).__name__}: {first_line(err)}",
                             "check the checkpoint's .py files") from None
    return config, model_cls


def _build(model_cls, config, dtype, spec: ModelSpec):
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with skip_weight_init():
            return model_cls(config)
    except torch.OutOfMemoryError:
        raise ModelLoadError(f"out of memory building '{spec.label}' on the CPU",
                             "try --dtype bf16 or fp16, or a machine with more memory") from None
    except ImportError as err:
        raise ModelLoadError(f"'{spec.label}' needs a package that is missing: {first_line(err)}",
                             "install the package named above") from None
    except Exception as err:
        raise ModelLoadError(f"the code of '{spec.label}' failed to build the model: "
                             f"{type(err).__name__}: {first_line(err)}",
                             "this checkpoint's code does not run with the installed transformers") from None
    finally:
        torch.set_default_dtype(before)


def read_weights(file: Path) -> dict:
    import torch

    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file), device="cpu")
        return torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelLoadError(f"cannot read weights from '{file.name}': {first_line(err)}",
                             "the file may be corrupt or truncated: re-download it") from None


def load_weights(model, path: Path, *, label: str = "the model") -> dict:
    """Copy the checkpoint's tensors into ``model`` (dtype converted); returns {"missing", "unexpected"}.

    Tensors the model has and the checkpoint lacks are an error, unless the
    class says they may be absent or they are tied to a loaded tensor.
    """
    expected = set(model.state_dict().keys())
    loaded: set[str] = set()
    unexpected: set[str] = set()
    for file in weight_files(path):
        state = read_weights(file)
        take = {k: v for k, v in state.items() if k in expected}
        unexpected.update(k for k in state if k not in expected)
        try:
            model.load_state_dict(take, strict=False)
        except RuntimeError as err:
            raise ModelLoadError(f"the weights in '{file.name}' do not fit the model built from config.json: "
                                 f"{first_line(_size_line(err))}",
                                 "config.json does not match the weights: restore the checkpoint's files") from None
        loaded.update(take)
        del state, take
    missing = expected - loaded
    if missing and _ties_embeddings(model):
        try:
            model.tie_weights()
        except Exception:
            pass
    missing = {k for k in missing if not _ignored(model, k, "_keys_to_ignore_on_load_missing")
               and not _shares_storage(model, k, loaded)}
    if missing:
        names = sorted(missing)
        raise ModelLoadError(f"the checkpoint of '{label}' has no weights for {len(names)} tensor(s) of its model "
                             f"(e.g. {', '.join(names[:3])})",
                             "the checkpoint is incomplete or config.json does not match it")
    non_persistent = {f"{m}.{b}" if m else b for m, mod in model.named_modules()
                      for b in getattr(mod, "_non_persistent_buffers_set", ())}
    unexpected = {k for k in unexpected if k not in non_persistent
                  and not _ignored(model, k, "_keys_to_ignore_on_load_unexpected")}
    return {"missing": sorted(missing), "unexpected": sorted(unexpected)}


def _size_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
    return lines[0] if lines else str(err)


def _ignored(model, key: str, attribute: str) -> bool:
    patterns = getattr(type(model), attribute, None) or []
    return any(re.search(p, key) for p in patterns)


def _ties_embeddings(model) -> bool:
    config = getattr(model, "config", None)
    return bool(getattr(config, "tie_word_embeddings", False)) and hasattr(model, "tie_weights")


def _shares_storage(model, key: str, loaded: set[str]) -> bool:
    tensors = model.state_dict(keep_vars=True)
    target = tensors.get(key)
    if target is None or target.is_meta:
        return False
    ptr = target.data_ptr()
    return any(tensors[k].data_ptr() == ptr for k in loaded if k in tensors)


# -- tokenizer ---------------------------------------------------------------------
def load_vendor_tokenizer(path: Path, spec: ModelSpec):
    """The checkpoint's own tokenizer class (fixed from outside where this transformers needs it)."""
    require_consent(path, spec)
    fixes.install_import_standins()
    auto_map = read_json(path / "tokenizer_config.json").get("auto_map") or {}
    ref = auto_map.get("AutoTokenizer")
    if isinstance(ref, list):
        ref = next((r for r in ref if isinstance(r, str)), None)
    try:
        if isinstance(ref, str) and "--" not in ref:
            from transformers.dynamic_module_utils import get_class_from_dynamic_module

            cls = get_class_from_dynamic_module(ref, str(path), local_files_only=True)
            fixes.fix_tokenizer_class(cls)
            return cls.from_pretrained(str(path), local_files_only=True)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=spec.trust_remote_code,
                                             local_files_only=True)
    except Exception as err:
        raise ModelLoadError(f"the tokenizer code of '{spec.label}' does not run here: "
                             f"{type(err).__name__}: {first_line(err)}",
                             "use --engine loop, which tokenises without the checkpoint's code") from None
