"""A remote-code checkpoint's own ``quantize(bits)``: how ChatGLM2/3 and Baichuan quantize themselves.

The vendors' READMEs quantize with the model's own method,
``AutoModel.from_pretrained(path, trust_remote_code=True).quantize(4).cuda()``.
What their files do (read in copies of the Hugging Face repositories):

- ChatGLM2-6B / ChatGLM3-6B (``modeling_chatglm.py``):
  ``ChatGLMForConditionalGeneration.quantize(self, bits, empty_init=False,
  device=None, **kwargs)`` calls ``quantization.quantize`` on the encoder,
  which replaces every block's ``query_key_value``, ``dense``,
  ``dense_h_to_4h`` and ``dense_4h_to_h`` with a ``QuantizedLinear``: int8
  storage (int4 packed two to a byte), one scale per output row, dequantized
  in forward. Each weight is moved to ``torch.cuda.current_device()`` to be
  quantized, so either width needs a CUDA GPU; packing and unpacking int4
  are ``cpm_kernels`` CUDA kernels (the import is in a try block: without
  the package it only logs a warning); forward asserts fp16/bf16 scales.
- Baichuan2-7B/13B-Chat (``modeling_baichuan.py``):
  ``BaichuanForCausalLM.quantize(self, bits)`` calls
  ``quantizer.quantize_online``: ``W_pack``, ``o_proj`` and the MLP become
  bitsandbytes ``Linear8bitLtOnline`` / ``Linear4bitOnline`` (nf4), which
  bitsandbytes quantizes when the model is moved to its device.
- Baichuan-13B-Chat: ``quantize(self, bits)`` builds ``quantizer.QLinear``:
  int8 in plain torch; int4 packed with ``torch.cuda`` and unpacked with
  ``cpm_kernels`` CUDA kernels.

llm-tui calls the method after the weights are loaded and moves the model to
its device afterwards, as the READMEs do. What the method needs is read here
from the files before any weights are: the method is found by reading the
model file (no code runs), and the modules it imports are scanned for the
packages they import and for ``torch.cuda.current_device()``.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MissingPackageError, ModelLoadError

#: Packages whose kernels only the 4-bit path uses (ChatGLM2/3 and Baichuan-13B pack and
#: unpack int4 with them; their int8 is plain torch). cpm_kernels are CUDA kernels: the
#: package does not even import on a machine without a CUDA driver.
_INT4_ONLY = {"cpm_kernels": "CUDA kernels from cpm_kernels"}
#: Packages needed whenever they are imported, even inside a try block.
_ALWAYS = ("bitsandbytes",)
_CUDA_CALL = "torch.cuda.current_device("


@dataclass(frozen=True)
class OwnQuantize:
    """What the model class's ``quantize`` is and what its code imports."""

    class_name: str
    #: The method's parameters after ``self`` (e.g. ("bits", "empty_init", "device", "kwargs")).
    params: tuple[str, ...]
    #: The checkpoint's files its code reads for quantizing (e.g. ("quantization.py",)).
    files: tuple[str, ...]
    #: Top-level packages those files import outside try blocks (needed), and only inside them
    #: (needed when known to be: bitsandbytes always, cpm_kernels for int4).
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    #: The file that calls ``torch.cuda.current_device()`` (its weights go to the GPU to be quantized).
    cuda_call: str | None = None
    #: Which file imports each package, for messages.
    where: dict = field(default_factory=dict, compare=False)

    def packages(self, bits: int) -> list[str]:
        """Packages the ``bits``-wide path needs."""
        wanted = list(self.required)
        for name in self.optional:
            if name in _ALWAYS or (bits == 4 and name in _INT4_ONLY):
                wanted.append(name)
        return wanted

    def cuda_reason(self, bits: int) -> str | None:
        """Why the ``bits``-wide path needs a CUDA GPU, or None when nothing says it does."""
        if self.cuda_call:
            return f"{self.cuda_call} quantizes each weight on the GPU (torch.cuda.current_device())"
        if bits == 4:
            for name, what in _INT4_ONLY.items():
                if name in self.required or name in self.optional:
                    return f"{self.where.get(name, 'its code')} packs 4-bit weights with {what}"
        return None


def find_own_quantize(path: Path) -> OwnQuantize | None:
    """The checkpoint's model class's own ``quantize`` method, read from its files (nothing runs), or None."""
    from .load import model_class_ref

    path = Path(path)
    ref = model_class_ref(path)
    if ref is None:
        return None
    module, _, class_name = ref.rpartition(".")
    tree = _parse(path / (module.replace(".", "/") + ".py"))
    if tree is None:
        return None
    method = _find_method(tree, class_name, "quantize")
    if method is None:
        return None
    args = method.args
    params = [a.arg for a in (*args.posonlyargs, *args.args)][1:]
    if args.vararg is not None:
        params.append(args.vararg.arg)
    params.extend(a.arg for a in args.kwonlyargs)
    if args.kwarg is not None:
        params.append(args.kwarg.arg)
    if not params:
        return None  # no room for the bit width
    files = _relative_files(path, method, module)
    if not files:
        files = [path / (module.replace(".", "/") + ".py")]
    required, optional, where, cuda_call = _scan(path, files)
    return OwnQuantize(class_name, tuple(params), tuple(f.name for f in files), tuple(required), tuple(optional),
                       cuda_call, where)


def require(own: OwnQuantize, bits: int, *, device: str, label: str) -> None:
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
            from ..quant import require_packages

            require_packages("int8", on_gpu=str(device).startswith("cuda"), purpose=purpose)
        elif not _installed(name):
            raise MissingPackageError(name, purpose)


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
                             f"{type(err).__name__}: {_first_line(err)}", _fix_for(err, bits)) from None
    return result if isinstance(result, torch.nn.Module) else model


def check_runs(model, *, label: str, bits: int, device: str, dtype) -> None:
    """One token through the quantized model's forward: a quantization that cannot run here fails now, not mid-turn."""
    import torch

    from ..runners.loop import ForwardCall, split_output

    ids = torch.zeros((1, 1), dtype=torch.long, device=device)
    try:
        with torch.inference_mode():
            logits, _ = split_output(ForwardCall.for_model(model)(model, ids, None, 0))
    except Exception as err:
        raise ModelLoadError(f"'{label}' quantized by its own quantize({bits}) does not run on {device} in "
                             f"{str(dtype).replace('torch.', '')}: {type(err).__name__}: {_first_line(err)}",
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


# -- reading the files -------------------------------------------------------
def _parse(file: Path) -> ast.Module | None:
    try:
        return ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None


def _find_method(tree: ast.Module, class_name: str, name: str, seen: frozenset = frozenset()):
    """``name`` defined in the class or in a base class of the same file."""
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    node = classes.get(class_name)
    if node is None or class_name in seen:
        return None
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == name:
            return item
    for base in node.bases:
        if isinstance(base, ast.Name):
            found = _find_method(tree, base.id, name, seen | {class_name})
            if found is not None:
                return found
    return None


def _relative_files(root: Path, node: ast.AST, module: str) -> list[Path]:
    """The checkpoint's files that ``node`` (in ``module``) imports relatively, and theirs in turn."""
    found: list[Path] = []
    queue = [(node, (root / (module.replace(".", "/") + ".py")).parent)]
    while queue:
        current, folder = queue.pop(0)
        for item in ast.walk(current):
            if not (isinstance(item, ast.ImportFrom) and item.level >= 1 and item.module):
                continue
            base = folder
            for _ in range(item.level - 1):
                base = base.parent
            file = base / (item.module.replace(".", "/") + ".py")
            if file.is_file() and file.resolve().is_relative_to(root.resolve()) and file not in found:
                found.append(file)
                tree = _parse(file)
                if tree is not None:
                    queue.append((tree, file.parent))
    return found


def _scan(root: Path, files: list[Path]):
    """(required, optional, where, cuda_call): packages imported outside / inside try blocks."""
    local = {p.stem for p in root.glob("*.py")}
    required: list[str] = []
    optional: list[str] = []
    where: dict = {}
    cuda_call = None
    for file in files:
        tree = _parse(file)
        if tree is None:
            continue
        if cuda_call is None and _CUDA_CALL in file.read_text(encoding="utf-8", errors="replace"):
            cuda_call = file.name
        guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for b in t.body for n in ast.walk(b)}
        for item in ast.walk(tree):
            names: list[str] = []
            if isinstance(item, ast.Import):
                names = [alias.name for alias in item.names]
            elif isinstance(item, ast.ImportFrom) and item.level == 0 and item.module:
                names = [item.module]
            for name in names:
                top = name.split(".")[0]
                if top in local or top in sys.stdlib_module_names or top == "__future__":
                    continue
                where.setdefault(top, file.name)
                target = optional if id(item) in guarded else required
                if top not in required and top not in target:
                    target.append(top)
                if target is required and top in optional:
                    optional.remove(top)
    return required, optional, where, cuda_call


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


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


def _first_line(err) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
