"""Running a checkpoint's own ``quantize(bits)`` on loaded weights, checking that the result runs, and its size."""

from __future__ import annotations

from backends.core.errors import ModelLoadError, first_line
from backends.loading.forward_call import ForwardCall, split_output


def run_quantize(model, bits: int, *, label: str):
    """Call the model's own ``quantize(bits)``; returns the quantized model (one line on failure)."""
    import torch

    method = getattr(model, "quantize", None)
    if not callable(method):
        raise ModelLoadError(f"the model class of '{label}' has no quantize() method after all",
                             "use --quant none, or nf4/fp4 with --engine generate")
    try:
        with torch.no_grad():
            result = method(bits)
    except torch.OutOfMemoryError:
        raise ModelLoadError(f"out of memory while '{label}' quantized itself to {bits} bits",
                             "close other programs, or use a machine with more memory") from None
    except Exception as err:
        raise ModelLoadError(f"the code of '{label}' could not quantize it to {bits} bits: "
                             f"{type(err).__name__}: {first_line(err)}", _fix_for(err, bits)) from None
    return result if isinstance(result, torch.nn.Module) else model


def check_runs(model, *, label: str, bits: int, device: str, dtype) -> None:
    """One token through the quantized model's forward: a quantization that cannot run here fails now, not mid-turn."""
    import torch


    ids = torch.zeros((1, 1), dtype=torch.long, device=device)
    try:
        with torch.inference_mode():
            logits, _ = split_output(ForwardCall.for_model(model)(model, ids, None, 0))
    except Exception as err:
        raise ModelLoadError(f"'{label}' quantized by its own quantize({bits}) does not run on {device} in "
                             f"{str(dtype).replace('torch.', '')}: {type(err).__name__}: {first_line(err)}",
                             _fix_for(err, bits, dtype)) from None
    if logits is None or not bool(torch.isfinite(logits.float()).all()):
        raise ModelLoadError(f"'{label}' quantized by its own quantize({bits}) gives non-finite logits",
                             "try --dtype fp16, or --quant none")


def weights_bytes(model) -> int:
    """Bytes held by the model's tensors: parameters, buffers, tensors kept as plain attributes
    (Baichuan-13B's QLinear keeps its int weight that way) and those a quantized parameter
    carries (bitsandbytes' scales and quantization state); each storage once."""
    import torch

    seen: set[tuple[str, int]] = set()
    total = 0

    def add(value, depth: int = 0) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            if value.is_meta:
                return
            key = (str(value.device), value.untyped_storage().data_ptr())
            if key not in seen:
                seen.add(key)
                total += value.untyped_storage().nbytes()
            if depth == 0:  # a parameter's own tensors (Int8Params.SCB, Params4bit.quant_state)
                for extra in vars(value).values():
                    add(extra, 1)
        elif depth and depth < 3 and hasattr(value, "__dict__") and not isinstance(value, (type, torch.nn.Module)):
            for extra in vars(value).values():
                add(extra, depth + 1)

    for module in model.modules():
        for tensor in (*module._parameters.values(), *module._buffers.values()):
            add(tensor)
        for value in vars(module).values():
            if isinstance(value, torch.Tensor):
                add(value)
    return total


def _fix_for(err: BaseException, bits: int, dtype=None) -> str:
    text = f"{type(err).__name__} {err}".lower()
    if "cuda" in text or "nvidia" in text:
        return "its quantization needs an NVIDIA GPU: run it with --device-map cuda:0, or use --quant none"
    dtype_name = str(dtype).replace("torch.", "") if dtype is not None else ""
    if isinstance(err, (AssertionError, AttributeError)) or "dtype" in text or "half" in text:
        if dtype_name != "float16":
            return "its quantization code may want fp16: try --dtype fp16, or --quant none"
    if isinstance(err, ImportError):
        return "install what its quantization module imports, or use --quant none"
    other = 8 if bits == 4 else 4
    return f"try --quant int{other} or --quant none"
