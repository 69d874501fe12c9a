"""The buffer guard: computed tensors must hold what the model's own code computes.

Non-persistent buffers (rotary ``inv_freq``, Qwen v1's ``logn_tensor`` and
``masked_bias`` ...) are not in the checkpoint: the model's ``__init__``
computes them. A loader that builds the model on the meta device and only
fills in the checkpoint's tensors leaves them uninitialised; the model then
runs without any error and emits wrong tokens. Plain tensor attributes
computed in ``__init__`` can be left on the meta device the same way.

:func:`guard_buffers` builds a reference instance of the same class from the
same config on the CPU (parameters on the meta device, so it costs no
weight memory), compares every non-persistent buffer with it, copies the
reference value in where they differ or are not finite, puts meta tensor
attributes back the same way, and raises :class:`ModelLoadError` when a
buffer still holds non-finite values.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

from backends.core.errors import ModelLoadError


@dataclass
class BufferReport:
    checked: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def guard_buffers(model, reference=None, *, label: str = "the model") -> BufferReport:
    """Check (and where needed rebuild) ``model``'s computed buffers against ``reference``.

    ``reference``: an instance built by the model's own code on the CPU;
    built here (see :func:`reference_instance`) when not given.
    """
    import torch

    report = BufferReport()
    if reference is None:
        try:
            reference = reference_instance(type(model), model.config, _model_dtype(model))
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            report.notes.append(f"computed buffers not compared: the model could not be rebuilt ({first[:200]})")
            reference = None
    ref_modules = dict(reference.named_modules()) if reference is not None else {}
    fallback_device = _model_device(model)

    for mod_name, module in model.named_modules():
        ref_module = ref_modules.get(mod_name)
        for buf_name in sorted(getattr(module, "_non_persistent_buffers_set", ())):
            full = f"{mod_name}.{buf_name}" if mod_name else buf_name
            value = module._buffers.get(buf_name)
            ref = ref_module._buffers.get(buf_name) if ref_module is not None else None
            report.checked.append(full)
            if ref is None or ref.is_meta:
                continue
            if value is None or value.is_meta or not _same(value, ref):
                device = fallback_device if value is None or value.is_meta else value.device
                module._buffers[buf_name] = ref.detach().clone().to(device)
                report.rebuilt.append(full)
        if ref_module is None:
            continue
        for attr, value in list(vars(module).items()):
            if not isinstance(value, torch.Tensor) or isinstance(value, torch.nn.Parameter):
                continue
            if value.is_meta or (value.is_floating_point() and not bool(torch.isfinite(value).all())):
                ref = getattr(ref_module, attr, None)
                if isinstance(ref, torch.Tensor) and not ref.is_meta:
                    setattr(module, attr, ref.detach().clone().to(fallback_device))
                    report.rebuilt.append(f"{mod_name}.{attr}" if mod_name else attr)

    broken = [name for name, tensor in _computed_tensors(model) if _broken(tensor)]
    if broken:
        raise ModelLoadError(f"{label}: computed tensor(s) {', '.join(broken[:4])} hold non-finite or unset values "
                             "even after rebuilding them with the model's own code",
                             "the checkpoint's code does not compute them correctly here; report it with the "
                             "checkpoint's name")
    return report


def _computed_tensors(model):
    import torch

    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for buf_name in getattr(module, "_non_persistent_buffers_set", ()):
            value = module._buffers.get(buf_name)
            if value is not None:
                yield prefix + buf_name, value
        for attr, value in vars(module).items():
            if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
                yield prefix + attr, value


def _broken(tensor) -> bool:
    import torch

    if tensor.is_meta:
        return True
    return tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())


def _same(value, ref) -> bool:
    import torch

    if value.shape != ref.shape:
        return False
    got = value.detach().to("cpu")
    want = ref.detach().to("cpu")
    if got.is_floating_point() or want.is_floating_point():
        if not bool(torch.isfinite(got).all()):
            return False
        got, want = got.float(), want.to(got.dtype).float()
        return bool(torch.allclose(got, want, rtol=1e-3, atol=1e-6))
    return bool(torch.equal(got, want.to(got.dtype)))


def reference_instance(model_cls, config, dtype=None):
    """``model_cls(config)`` on the CPU with its parameters on the meta device.

    The model's ``__init__`` runs as usual, so every buffer it computes is
    computed for real; parameters cost no memory and are not initialised.
    """
    with _default_dtype(dtype), skip_weight_init(), _parameters_on_meta():
        return model_cls(copy.deepcopy(config))


@contextlib.contextmanager
def _parameters_on_meta():
    import torch

    original = torch.nn.Module.register_parameter

    def register_parameter(self, name, param):
        original(self, name, param)
        if param is not None and not param.is_meta:
            self._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register_parameter
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


@contextlib.contextmanager
def _default_dtype(dtype):
    import torch

    if dtype is None or not getattr(dtype, "is_floating_point", False):
        yield
        return
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def skip_weight_init():
    """transformers' no-init context (weights are loaded right after), when this version has one."""
    for where in ("transformers.initialization", "transformers.modeling_utils"):
        try:
            module = __import__(where, fromlist=["no_init_weights"])
            return module.no_init_weights()
        except (ImportError, AttributeError):
            continue
    return contextlib.nullcontext()


def _model_dtype(model):
    import torch

    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def _model_device(model):
    import torch

    for param in model.parameters():
        if not param.is_meta:
            return param.device
    return torch.device("cpu")
