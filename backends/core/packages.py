"""Whether an optional package is installed, and its version, without importing it; and whether
one that is installed really imports (``import_problem``)."""

from __future__ import annotations

import functools
import importlib
import importlib.util

from backends.core.errors import error_line


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@functools.cache
def import_problem(module: str) -> str | None:
    """Why an installed ``module`` does not import, in one line (None: it imports, or is absent).

    A package can be installed and still fail when imported: a native library
    built for another machine raises OSError or RuntimeError, not ImportError.
    Asked once per process: a failed import runs the module again each time.
    """
    if not installed(module):
        return None
    try:
        importlib.import_module(module)
    except Exception as err:  # whatever the native loader raises: it does not load
        return error_line(err)
    return None


def package_version(package: str) -> tuple[int, ...]:
    from importlib import metadata

    try:
        text = metadata.version(package)
    except metadata.PackageNotFoundError:
        return ()
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
