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

def first_line(err: BaseException) -> str:
    """The first line of an error's message (at most 300 characters), else its type's name."""
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def error_line(err: BaseException | None) -> str:
    """One line for the user: our own errors' line, else the error's type and its first line."""
    if isinstance(err, LlmTuiError):
        return str(err)
    if err is None:
        return "unknown error"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
