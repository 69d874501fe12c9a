"""A remote-code checkpoint's own ``quantize(bits)``, and what its code needs, read from the files before any weights.

The checkpoint's Python files are parsed (never run) to find the method and the
packages and devices its code calls for."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

from backends.checkpoint.remote_code import model_class_ref

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


#: Packages whose kernels only the 4-bit path uses (ChatGLM2/3 and Baichuan-13B pack and
#: unpack int4 with them; their int8 is plain torch). cpm_kernels are CUDA kernels: the
#: package does not even import on a machine without a CUDA driver.
_INT4_ONLY = {"cpm_kernels": "CUDA kernels from cpm_kernels"}
