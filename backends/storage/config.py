"""The TOML config file: defaults, model aliases and key remaps.

Read with tomllib and validated on load: a bad value stops with one line that
names the file, the key and the fix; an unknown key only adds a warning, so a
config written for a newer llm-tui still starts. Written with tomlkit, which
keeps the user's comments and layout.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from backends.core.errors import UsageError
from backends.core.params import SamplingParams, check_range
from backends.core.paths import config_dir
from backends.core.spec import (
    DEFAULT_MODEL,
    DTYPE_CHOICES,
    ENGINE_CHOICES,
    QUANT_CHOICES,
    ModelSpec,
    check_device_map,
)
from backends.storage.mcp_config import mcp_servers

CONFIG_NAME = "config.toml"


def default_config_path() -> Path:
    return config_dir() / CONFIG_NAME


@dataclass(frozen=True)
class Defaults:
    """``[defaults]``: what applies when neither a flag nor an alias says otherwise."""

    model: str | None = None  # an alias, a path or an HF id; None is the embedded default model
    quant: str = "none"
    dtype: str = "auto"
    device_map: str = "auto"
    system: str | None = None
    temperature: float = SamplingParams.temperature
    top_p: float = SamplingParams.top_p
    top_k: int = SamplingParams.top_k
    repetition_penalty: float = SamplingParams.repetition_penalty
    max_new_tokens: int = SamplingParams.max_new_tokens
    theme: str | None = None
    #: Keep each turn's KV cache for the next (``--prompt-cache on|off`` overrides it).
    prompt_cache: bool = True

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              repetition_penalty=self.repetition_penalty, max_new_tokens=self.max_new_tokens)


@dataclass(frozen=True)
class ModelAlias:
    """``[models.NAME]``: a short name for a model and how to load it; unset fields follow [defaults]."""

    name: str
    path: str
    quant: str | None = None
    dtype: str | None = None
    device_map: str | None = None
    trust_remote_code: bool = False
    engine: str | None = None
    max_memory: str | None = None
    #: A served model (``path`` is a URL): which of its models, where its tokenizer files are, and the
    #: environment variable that holds its API key (the key itself never goes in this file).
    model: str | None = None
    tokenizer: str | None = None
    api_key_env: str | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    exists: bool = False
    defaults: Defaults = field(default_factory=Defaults)
    models: dict[str, ModelAlias] = field(default_factory=dict)
    #: Binding id -> keys, e.g. {"send": "ctrl+j,alt+enter"}.
    keys: dict[str, str] = field(default_factory=dict)
    #: ``[mcp.servers.NAME]``: MCP servers whose tools may be used (``ServerConfig`` by name).
    mcp_servers: dict = field(default_factory=dict)
    #: One line per ignored unknown key or section.
    warnings: tuple[str, ...] = ()

    @property
    def aliases(self) -> tuple[str, ...]:
        return tuple(self.models)

    def model_spec(self, alias: str) -> ModelSpec:
        """The ModelSpec an alias names, with [defaults] filling what it leaves out."""
        entry = self.models.get(alias)
        if entry is None:
            known = ", ".join(self.aliases)
            raise UsageError(f"there is no model alias '{alias}' in {self.path}",
                             f"known aliases: {known}" if known else f"add a [models.{alias}] table with path = ...")
        d = self.defaults
        return ModelSpec(
            source=entry.path,
            quant=entry.quant or d.quant,
            dtype=entry.dtype or d.dtype,
            device_map=entry.device_map or d.device_map,
            trust_remote_code=entry.trust_remote_code,
            engine=entry.engine or "auto",
            max_memory=entry.max_memory,
            server_model=entry.model,
            tokenizer=entry.tokenizer,
            api_key_env=entry.api_key_env,
            alias=alias,
        )

    def spec_for(self, model: str | None = None) -> ModelSpec:
        """An alias, a path or an HF id (None: [defaults] model) as a ModelSpec."""
        model = model if model is not None else self.defaults.model
        if model is not None and model in self.models:
            return self.model_spec(model)
        d = self.defaults
        return ModelSpec(source=model, quant=d.quant, dtype=d.dtype, device_map=d.device_map)

    def sampling_params(self) -> SamplingParams:
        return self.defaults.sampling_params()


# -- value checks ------------------------------------------------------------


class BadValue(Exception):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


Check = Callable[[Any], Any]


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise BadValue("is not a string", 'put the value in quotes, e.g. "text"')
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadValue("is not true or false", "write true or false (no quotes)")
    return value


def _choice(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise BadValue("is not known", "use one of: " + ", ".join(f'"{c}"' for c in choices))
        return value
    return check


def _device_map(value: Any) -> str:
    _string(value)
    try:
        check_device_map(value)
    except UsageError as err:
        raise BadValue("is not understood", err.fix or "use auto, cpu or cuda:0") from None
    return value


def _number(name: str, kind: type) -> Check:
    def check(value: Any) -> Any:
        # bool is an int in Python, but `temperature = true` is a mistake.
        ok = isinstance(value, int) if kind is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            raise BadValue(f"is not {'an integer' if kind is int else 'a number'}",
                       f"write {'an integer' if kind is int else 'a number'} without quotes")
        try:
            check_range(name, value)
        except UsageError as err:
            raise BadValue("is out of range", err.fix or "") from None
        return kind(value)
    return check


def _keys(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return ",".join(v.strip() for v in value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise BadValue("is not a key list", 'write keys like "ctrl+j,alt+enter" or ["ctrl+j", "alt+enter"]')


DEFAULTS_CHECKS: dict[str, Check] = {
    "model": _string,
    "quant": _choice(QUANT_CHOICES),
    "dtype": _choice(DTYPE_CHOICES),
    "device_map": _device_map,
    "system": _string,
    "temperature": _number("temperature", float),
    "top_p": _number("top_p", float),
    "top_k": _number("top_k", int),
    "repetition_penalty": _number("repetition_penalty", float),
    "max_new_tokens": _number("max_new_tokens", int),
    "theme": _string,
    "prompt_cache": _flag,
}

ALIAS_CHECKS: dict[str, Check] = {
    "path": _string,
    "quant": _choice(QUANT_CHOICES),
    "dtype": _choice(DTYPE_CHOICES),
    "device_map": _device_map,
    "trust_remote_code": _flag,
    "engine": _choice(ENGINE_CHOICES),
    "max_memory": _string,
    "model": _string,
    "tokenizer": _string,
    "api_key_env": _string,
}

_SECTIONS = ("defaults", "models", "keys", "mcp")

assert set(DEFAULTS_CHECKS) == {f.name for f in fields(Defaults)}
assert set(ALIAS_CHECKS) == {f.name for f in fields(ModelAlias)} - {"name"}


# -- loading -----------------------------------------------------------------


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read and validate the config file; a missing file gives the defaults."""
    file = Path(path) if path is not None else default_config_path()
    if not file.exists():
        return Config(path=file)
    data = read_toml(file)
    return build_config(file, data)


def read_toml(file: Path) -> dict:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read the config file {file}: {err}", "fix its permissions or move it away") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{file} is not valid TOML: {err}", "fix the line named, or move the file away") from None


def build_config(file: Path, data: dict) -> Config:
    warnings: list[str] = []
    for name in data:
        if name not in _SECTIONS:
            warnings.append(f"{file}: unknown section [{name}] ignored (known: {', '.join(_SECTIONS)})")

    defaults_table = _table(file, data, "defaults")
    values = _check_table(file, "[defaults]", defaults_table, DEFAULTS_CHECKS, warnings)
    defaults = Defaults(**values)

    models: dict[str, ModelAlias] = {}
    for name, table in _table(file, data, "models").items():
        where = f"[models.{key_text(name)}]"
        if not isinstance(table, dict):
            raise UsageError(f"{file}: models.{key_text(name)} is not a table",
                             f'write it as {where} followed by path = "..."')
        if name == DEFAULT_MODEL:
            raise UsageError(f"{file}: {where} uses the reserved name '{DEFAULT_MODEL}'",
                             "rename the alias; 'default' means the embedded default model")
        if "path" not in table:
            raise UsageError(f"{file}: {where} has no path",
                             f'add path = "/models/{name}" (a local directory, GGUF file or HF id) under {where}')
        values = _check_table(file, where, table, ALIAS_CHECKS, warnings)
        values["path"] = os.path.expanduser(values["path"])
        models[name] = ModelAlias(name=name, **values)

    keys: dict[str, str] = {}
    for binding, value in _table(file, data, "keys").items():
        try:
            keys[binding] = _keys(value)
        except BadValue as bad:
            raise UsageError(f"{file}: [keys] {key_text(binding)} {bad.problem}", bad.fix) from None

    servers = mcp_servers(file, data, warnings)
    return Config(path=file, exists=True, defaults=defaults, models=models, keys=keys, mcp_servers=servers,
                  warnings=tuple(warnings))


def _table(file: Path, data: dict, name: str) -> dict:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise UsageError(f"{file}: {name} must be a table", f"write it as a [{name}] section")
    return table


def _check_table(file: Path, where: str, table: dict, checks: dict[str, Check], warnings: list[str]) -> dict:
    values: dict[str, Any] = {}
    for key, value in table.items():
        check = checks.get(key)
        if check is None:
            warnings.append(f"{file}: unknown key {where} {key_text(key)} ignored (known: {', '.join(checks)})")
            continue
        try:
            values[key] = check(value)
        except BadValue as bad:
            raise UsageError(f"{file}: {where} {key} = {shown_value(value)} {bad.problem}", bad.fix) from None
    return values


def shown_value(value: Any) -> str:
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    return text if len(text) <= 40 else text[:39] + "…"


def key_text(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)
    return key if bare else f'"{key}"'


# -- writing -----------------------------------------------------------------
