"""Consent before a checkpoint's own code runs: the files it would execute, refused without --trust-remote-code."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from backends.checkpoint.remote_code import needs_remote_code
from backends.core.errors import RemoteCodeRefused
from backends.core.spec import ModelSpec


@dataclass(frozen=True)
class CodeFile:
    """One file of a checkpoint's own code, as the consent screen lists it."""

    name: str
    size: int
    sha256: str


def remote_code_files(path: Path) -> list[Path]:
    """The .py files a checkpoint would run with trust_remote_code."""

    return needs_remote_code(path)


def code_files(folder: Path) -> list[CodeFile]:
    """Name, size and SHA-256 of each file of its own code that ``folder``'s checkpoint would run."""
    out = []
    for path in remote_code_files(folder):
        data = Path(path).read_bytes()
        name = str(Path(path).relative_to(folder)) if Path(path).is_relative_to(folder) else Path(path).name
        out.append(CodeFile(name, len(data), hashlib.sha256(data).hexdigest()))
    return out


def require_consent(path: Path, spec: ModelSpec) -> None:
    files = remote_code_files(path)
    if files and not spec.trust_remote_code:
        names = ", ".join(p.name for p in files)
        raise RemoteCodeRefused(f"'{path.name}' needs to run its own Python code ({names})",
                                "read those files, then pass --trust-remote-code to allow it")
