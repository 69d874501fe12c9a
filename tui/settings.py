"""Command-line flags and the config file, turned into what the app and the headless commands need.

This is the one place a MODEL argument and the loading flags become a
``ModelSpec``: the app (each MODEL, the picker, ``/model``) and ``run``,
``inspect`` and ``profile`` all go through :func:`spec_for`, so a flag means
the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from backends.core.spec import DEFAULT_MODEL, ModelSpec
from backends.storage.config import load_config as load

#: Loading flags that, when given, override what a config alias says.
_VALUE_FLAGS = ("quant", "dtype", "device_map", "engine", "max_memory", "bnb_compute_dtype", "server_model",
                "tokenizer", "n_gpu_layers")
#: Flags that can only switch something on.
_SWITCHES = ("trust_remote_code", "bnb_double_quant")


@dataclass(frozen=True)
class LoadOptions:
    """The loading flags of the command line (None or False: not given)."""

    quant: str | None = None
    dtype: str | None = None
    device_map: str | None = None
    engine: str | None = None
    max_memory: str | None = None
    bnb_compute_dtype: str | None = None
    server_model: str | None = None
    tokenizer: str | None = None
    n_gpu_layers: int | None = None
    bnb_double_quant: bool = False
    trust_remote_code: bool = False
    prompt_cache: bool | None = None  # --prompt-cache on|off; None: the config's (on by default)

    @classmethod
    def from_args(cls, args) -> "LoadOptions":
        defaults = {f.name: f.default for f in fields(ModelSpec)}
        values: dict = {}
        for flag in _VALUE_FLAGS:
            value = getattr(args, flag, None)
            if value is not None and value != defaults[flag]:
                values[flag] = value
        for flag in _SWITCHES:
            values[flag] = bool(getattr(args, flag, False))
        if getattr(args, "prompt_cache", None) is not None:
            values["prompt_cache"] = args.prompt_cache == "on"
        return cls(**values)

    def changes(self) -> dict:
        """What these flags change in a spec."""
        out = {flag: getattr(self, flag) for flag in _VALUE_FLAGS if getattr(self, flag) is not None}
        out.update({flag: True for flag in _SWITCHES if getattr(self, flag)})
        if self.prompt_cache is not None:
            out["prompt_cache"] = self.prompt_cache
        return out


def load_config():
    """The config file (a broken one raises UsageError with one clear line)."""

    return load()


def spec_for(name: str | None, options: LoadOptions, config=None) -> ModelSpec:
    """The spec for a MODEL argument: a config alias, a path, an HF id, or the default
    (the config's ``[defaults] model``, else the embedded default), with the flags applied."""
    if name == DEFAULT_MODEL:
        name = ""
    if config is None:
        spec = ModelSpec(source=name or None)
    elif name == "":
        d = config.defaults
        spec = ModelSpec(quant=d.quant, dtype=d.dtype, device_map=d.device_map)
    else:
        spec = config.spec_for(name)  # None: the [defaults] model
    if config is not None and not config.defaults.prompt_cache:
        spec = spec.with_(prompt_cache=False)
    changes = options.changes()
    return spec.with_(**changes) if changes else spec


@dataclass(frozen=True)
class AppSettings:
    """Everything the app needs from the command line (and tests)."""

    models: list[str] = field(default_factory=list)  # MODEL arguments; empty: the default model
    options: LoadOptions = field(default_factory=LoadOptions)
    system: str | None = None
    keep_loaded: bool = False
    resume: str | None = None  # "latest" or a conversation id
    debug: bool = False
    store_path: str | None = None  # None: the data folder's database
    tools_file: str | None = None  # --tools FILE: definitions shown to the model (nothing runs them)
    mcp: tuple[str, ...] = ()  # --mcp NAME: configured MCP servers started with the app
    #: Snapshots and benchmarks: no cursor blink, no meter sampling, no config theme.
    frozen: bool = False

    @classmethod
    def from_args(cls, args) -> "AppSettings":
        return cls(models=list(getattr(args, "models", None) or []), options=LoadOptions.from_args(args),
                   system=getattr(args, "system", None), keep_loaded=bool(getattr(args, "keep_loaded", False)),
                   resume=getattr(args, "resume", None), debug=bool(getattr(args, "debug", False)),
                   tools_file=getattr(args, "tools", None), mcp=tuple(getattr(args, "mcp", None) or ()))
