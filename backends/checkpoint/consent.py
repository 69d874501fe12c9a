"""Consent before a checkpoint's own code runs: the files it would execute, refused without --trust-remote-code."""

from __future__ import annotations

from pathlib import Path

from backends.checkpoint.remote_code import needs_remote_code
from backends.core.errors import RemoteCodeRefused
from backends.core.spec import ModelSpec


def remote_code_files(path: Path) -> list[Path]:
    """The .py files a checkpoint would run with trust_remote_code."""

    return needs_remote_code(path)


def require_consent(path: Path, spec: ModelSpec) -> None:
    files = remote_code_files(path)
    if files and not spec.trust_remote_code:
        names = ", ".join(p.name for p in files)
        raise RemoteCodeRefused(f"'{path.name}' needs to run its own Python code ({names})",
                                "read those files, then pass --trust-remote-code to allow it")
