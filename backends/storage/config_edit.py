"""Editing the config file from the app: aliases and [defaults] values, keeping every comment.

Only a file that loads is ever rewritten, and it is replaced in one rename,
so a crash never leaves half a config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tomlkit

from backends.core.errors import UsageError
from backends.core.spec import DEFAULT_MODEL
from backends.storage.config import (
    ALIAS_CHECKS,
    DEFAULTS_CHECKS,
    BadValue,
    ModelAlias,
    build_config,
    default_config_path,
    key_text,
    load_config,
    read_toml,
    shown_value,
)


def save_alias(name: str, path: str, *, quant: str | None = None, dtype: str | None = None,
               device_map: str | None = None, trust_remote_code: bool = False, engine: str | None = None,
               max_memory: str | None = None, config_path: str | os.PathLike | None = None) -> ModelAlias:
    """Add or replace ``[models.NAME]``, keeping every comment and other setting in the file.

    Fields left as None are removed from the alias, so it follows [defaults].
    """
    file = Path(config_path) if config_path is not None else default_config_path()
    if not name or name == DEFAULT_MODEL:
        raise UsageError(f"'{name}' cannot be a model alias", "choose another name; 'default' is the embedded model")
    wanted = {"path": path, "quant": quant, "dtype": dtype, "device_map": device_map,
              "trust_remote_code": trust_remote_code or None, "engine": engine, "max_memory": max_memory}
    where = f"[models.{key_text(name)}]"
    for key, value in wanted.items():
        if value is not None:
            try:
                ALIAS_CHECKS[key](value)
            except BadValue as bad:
                raise UsageError(f"{file}: {where} {key} = {shown_value(value)} {bad.problem}", bad.fix) from None

    doc = _parse_for_edit(file)
    models = doc.get("models")
    if models is None:
        models = tomlkit.table(is_super_table=True)
        doc["models"] = models
    table = models.get(name)
    if table is None:
        table = tomlkit.table()
        models[name] = table
    # Edit the existing table in place so comments on kept keys survive.
    for key, value in wanted.items():
        if value is None:
            if key in table:
                del table[key]
        elif table.get(key) != value:
            table[key] = value
    _write(file, tomlkit.dumps(doc))
    return load_config(file).models[name]


def remove_alias(name: str, *, config_path: str | os.PathLike | None = None) -> bool:
    """Delete ``[models.NAME]``; False when there was none."""
    file = Path(config_path) if config_path is not None else default_config_path()
    if not file.exists():
        return False
    doc = _parse_for_edit(file)
    models = doc.get("models")
    if models is None or name not in models:
        return False
    del models[name]
    _write(file, tomlkit.dumps(doc))
    return True


def save_default(key: str, value: Any, *, config_path: str | os.PathLike | None = None) -> None:
    """Set one ``[defaults]`` value (None removes it), e.g. the theme picked in the app."""
    file = Path(config_path) if config_path is not None else default_config_path()
    check = DEFAULTS_CHECKS.get(key)
    if check is None:
        raise UsageError(f"'{key}' is not a [defaults] setting", "use one of: " + ", ".join(DEFAULTS_CHECKS))
    if value is not None:
        try:
            check(value)
        except BadValue as bad:
            raise UsageError(f"{file}: [defaults] {key} = {shown_value(value)} {bad.problem}", bad.fix) from None
    doc = _parse_for_edit(file)
    defaults = doc.get("defaults")
    if defaults is None:
        if value is None:
            return
        defaults = tomlkit.table()
        doc["defaults"] = defaults
    if value is None:
        if key in defaults:
            del defaults[key]
    else:
        defaults[key] = value
    _write(file, tomlkit.dumps(doc))


def _parse_for_edit(file: Path) -> tomlkit.TOMLDocument:
    if not file.exists():
        doc = tomlkit.document()
        doc.add(tomlkit.comment("llm-tui configuration"))
        return doc
    build_config(file, read_toml(file))  # refuse to rewrite a file that does not load
    return tomlkit.parse(file.read_text(encoding="utf-8"))


def _write(file: Path, text: str) -> None:
    # Write a sibling file and rename it over, so a crash never leaves half a config.
    file.parent.mkdir(parents=True, exist_ok=True)
    temp = file.with_name(f".{file.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, file)
