"""Compatibility fixes for remote-code checkpoints, applied from outside at load time.

The checkpoint's files are never edited. Each fix is small, applied only
where it is needed, and named after what it repairs:

- ``transformers_stream_generator`` (imported by Qwen v1's ``chat_stream``)
  no longer imports with transformers 5; transformers' import check refuses
  any checkpoint that mentions a package that does not import, so a stand-in
  module is registered. Using it for real raises ImportError saying why.
- ``PreTrainedModel.get_head_mask`` is gone in transformers 5 and Qwen v1's
  forward calls it: the vendor's model classes get an equivalent.
- ``PretrainedConfig.max_length`` is gone in transformers 5 and ChatGLM3's
  model reads it: the config gets one.
- Baichuan2's tokenizer reads ``self.sp_model`` inside the base class
  ``__init__`` before its own ``__init__`` has loaded it: it is loaded first.
- ChatGLM3's tokenizer ``_pad()`` has no ``padding_side`` argument, which
  transformers now passes: the argument is dropped for it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import types

#: Set on stand-in modules; its value says why the real package could not be used.
STANDIN_REASON = "__llm_tui_standin_reason__"

#: Packages that checkpoints import but that may not import with today's transformers.
_STANDIN_PACKAGES = {
    "transformers_stream_generator": ("transformers_stream_generator.main",),
}


def install_import_standins() -> list[str]:
    """Register stand-ins for packages that do not import here; returns their names."""
    installed = []
    for package, submodules in _STANDIN_PACKAGES.items():
        if package in sys.modules:
            continue
        reason = _import_failure(submodules[0])
        if reason is None:
            continue
        for name in (package, *submodules):
            sys.modules[name] = _standin_module(name, reason)
        installed.append(package)
    return installed


def standin_reason(module_name: str) -> str | None:
    """Why ``module_name`` is a stand-in ("not installed", "does not import ..."), or None when it is not."""
    module = sys.modules.get(module_name) or sys.modules.get(module_name.split(".")[0])
    return getattr(module, STANDIN_REASON, None) if module is not None else None


def _import_failure(module_name: str) -> str | None:
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError:
        return "not installed"
    except Exception as err:  # the package exists but is broken with this transformers
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"does not import with transformers {_transformers_version()}: {text[:160]}"
    return None


def _standin_module(name: str, reason: str) -> types.ModuleType:
    module = types.ModuleType(name, f"llm-tui stand-in: {reason}")
    setattr(module, STANDIN_REASON, reason)
    module.__path__ = []  # a package, so its submodules resolve from sys.modules

    def __getattr__(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise ImportError(f"{name}.{attr} is not available ('{name.split('.')[0]}' {reason}); "
                          "llm-tui registered a stand-in so the checkpoint's code can be imported")

    module.__getattr__ = __getattr__
    return module


def _transformers_version() -> str:
    try:
        import transformers

        return transformers.__version__
    except Exception:
        return "?"


# -- config ----------------------------------------------------------------------
def fix_config(config, dtype=None) -> list[str]:
    """Give the config what the vendor's model code reads and transformers 5 dropped."""
    applied = []
    if getattr(config, "max_length", None) is None:
        length = getattr(config, "seq_length", None) or getattr(config, "max_position_embeddings", None) or 20
        config.max_length = int(length)
        applied.append("config.max_length")
    if dtype is not None:
        for name in ("torch_dtype", "dtype"):
            try:
                setattr(config, name, dtype)
            except Exception:
                pass
    return applied


# -- model classes -----------------------------------------------------------------
def fix_model_classes(model_cls) -> list[str]:
    """Add helpers the vendor's module calls and this transformers lacks, to that module's model classes."""
    applied = []
    module = sys.modules.get(model_cls.__module__)
    classes = [model_cls]
    if module is not None:
        classes += [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__]
    for cls in classes:
        if not _is_torch_module(cls):
            continue
        if not hasattr(cls, "get_head_mask"):
            cls.get_head_mask = _get_head_mask
            applied.append(f"{cls.__name__}.get_head_mask")
    return applied


def _is_torch_module(cls) -> bool:
    """A transformers model class (a PreTrainedModel subclass)."""
    return any(base.__name__ == "PreTrainedModel" and base.__module__.startswith("transformers")
               for base in cls.__mro__)


def _get_head_mask(self, head_mask, num_hidden_layers: int, is_attention_chunked: bool = False):
    """One mask per layer: ``None`` for each when no mask is given (inference always)."""
    if head_mask is None:
        return [None] * num_hidden_layers
    if head_mask.dim() == 1:  # one value per head, the same for every layer
        head_mask = head_mask[None, None, :, None, None].expand(num_hidden_layers, -1, -1, -1, -1)
    elif head_mask.dim() == 2:  # one row per layer
        head_mask = head_mask[:, None, :, None, None]
    head_mask = head_mask.to(dtype=getattr(self, "dtype", head_mask.dtype))
    if is_attention_chunked:
        head_mask = head_mask.unsqueeze(-1)
    return head_mask


def add_generation_mixin(model_cls):
    """The class with ``generate()``, as transformers' own remote-code loading provides it."""
    try:
        from transformers.models.auto.auto_factory import (
            add_generation_mixin_to_remote_model,
        )
    except ImportError:  # older transformers: PreTrainedModel still inherits GenerationMixin
        return model_cls
    return add_generation_mixin_to_remote_model(model_cls)


# -- tokenizer classes ---------------------------------------------------------------
def fix_tokenizer_class(cls) -> list[str]:
    """Make the vendor tokenizer class construct and pad with this transformers."""
    if getattr(cls, "_llm_tui_fixed", None) is cls:
        return []
    applied = []
    init = cls.__dict__.get("__init__")
    if init is not None and _reads_sp_model_in_base_init(init):
        cls.__init__ = _preload_sp_model(init)
        applied.append(f"{cls.__name__}.__init__ (sp_model loaded first)")
    pad = cls.__dict__.get("_pad")
    if pad is not None and "padding_side" not in inspect.signature(pad).parameters:
        cls._pad = _drop_padding_side(pad)
        applied.append(f"{cls.__name__}._pad (padding_side)")
    cls._llm_tui_fixed = cls
    return applied


def _reads_sp_model_in_base_init(init) -> bool:
    """``self.sp_model`` is first set after ``super().__init__`` (Baichuan2), so the base class sees none."""
    try:
        source = inspect.getsource(init)
    except (OSError, TypeError):
        return False
    params = list(inspect.signature(init).parameters)
    set_at = source.find("self.sp_model =")
    super_at = source.find("super().__init__(")
    return len(params) > 1 and params[1] == "vocab_file" and 0 <= super_at < set_at


def _preload_sp_model(init):
    @functools.wraps(init)
    def __init__(self, vocab_file, *args, **kwargs):
        import sentencepiece as spm

        sp_model = spm.SentencePieceProcessor(**(kwargs.get("sp_model_kwargs") or {}))
        sp_model.Load(str(vocab_file))
        self.sp_model = sp_model
        self.vocab_file = vocab_file
        init(self, vocab_file, *args, **kwargs)

    return __init__


def _drop_padding_side(pad):
    @functools.wraps(pad)
    def _pad(self, *args, padding_side=None, **kwargs):
        return pad(self, *args, **kwargs)

    return _pad
