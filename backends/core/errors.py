"""Errors that reach the user as one clear line: what is wrong and what to do."""

from __future__ import annotations


class LlmTuiError(Exception):
    """A problem the user can fix. ``str()`` is the one line shown to them."""

    exit_code = 1

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


class UsageError(LlmTuiError):
    """Bad command-line or message input (exit code 2)."""

    exit_code = 2


class ModelLoadError(LlmTuiError):
    """The model could not be found or loaded."""

class MissingPackageError(LlmTuiError):
    """An optional package is needed for what was asked."""

    def __init__(self, package: str, purpose: str, extra: str | None = None) -> None:
        how = f"pip install 'llm-tui[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{purpose} needs the '{package}' package, which is not installed", f"run: {how}")
        self.package = package


class RemoteCodeRefused(LlmTuiError):
    """A checkpoint ships Python files and the user has not allowed running them."""

class GenerationError(LlmTuiError):
    """Generation failed part way (the partial reply is kept)."""


#: A progress message that starts with this is a warning for the user, not a step of the work:
#: ``run`` prints it even when it prints no progress (stderr not a terminal).
WARNING = "warning: "


def is_warning(message: str) -> bool:
    return message.startswith(WARNING)


def first_line(err: BaseException) -> str:
    """The first line of an error's message (at most 300 characters), else its type's name."""
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


#: What to change after running out of memory in a turn (or a scoring of its prompt).
OOM_FIX = "try a shorter conversation (/clear), --quant nf4, or another device"

_OOM_MARKS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
              "std::bad_alloc", "cublas_status_alloc_failed")


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA OOM, CPU allocator failures and MemoryError.

    Told from the error's type name and text alone (no torch import), so the one
    ``error_line`` can word it here, below every layer that runs out."""
    if isinstance(err, MemoryError) or type(err).__name__ in ("OutOfMemoryError", "MemoryError"):
        return True
    text = str(err).lower()
    return any(mark in text for mark in _OOM_MARKS)


def error_line(err: BaseException | None, doing: str | None = None) -> str:
    """One line for the user: our own errors' line; running out of memory, with what to change;
    else the error's type and its first line. ``doing`` names what failed ("generation")."""
    if isinstance(err, LlmTuiError):
        return str(err)
    if err is None:
        return "unknown error"
    if is_out_of_memory(err):
        return f"out of memory{f' during {doing}' if doing else ''} — {OOM_FIX}"
    text = str(err).strip().splitlines()
    what = f"{type(err).__name__}: {text[0][:300]}" if text else type(err).__name__
    return f"{doing} failed: {what}" if doing else what
