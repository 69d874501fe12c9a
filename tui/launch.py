"""Start the full-screen app from the parsed command line, and end the process promptly after it.

Promptly whatever the app is doing: Textual's own shutdown can block (it joins its input
thread) and the event loop can be busy for seconds (a huge render), so once quitting begins
(Ctrl+Q, a fatal error, SIGTERM, SIGHUP) an ``ExitWatchdog`` thread ends the process
``EXIT_GRACE_SECONDS`` later if it is still there, after saving the conversation and giving the
terminal its modes back. It does not wait for ``app.run()`` to return.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time

from . import terminal_input
from .app import LlmTuiApp
from .settings import AppSettings, load_config

try:
    import termios
except ImportError:  # no POSIX terminal here: nothing to give back
    termios = None

#: How long a generation may take to notice it was stopped once the app has closed, and how long
#: quitting may take at all before the watchdog ends the process.
EXIT_GRACE_SECONDS = 2.0
#: How long the watchdog waits for the save and the terminal before it ends the process anyway
#: (the main thread may hold the database, or the terminal may not read what is written to it).
LAST_WORDS_SECONDS = 0.5

# What Textual's driver writes when it leaves application mode: bracketed paste off, line wrap
# on, mouse reports off, the kitty keyboard protocol popped, the main screen, the cursor shown,
# focus reports off.
_LEAVE_APPLICATION_MODE = ("\x1b[?2004l\x1b[?7h\x1b[?1000l\x1b[?1003l\x1b[?1015l\x1b[?1006l"
                           "\x1b[<u\x1b[?1049l\x1b[?25h\x1b[?1004l")


def launch_app(args) -> int:
    """Run the app until it exits; returns the process exit code (the process may end here)."""
    settings = AppSettings.from_args(args)
    config = load_config()  # a broken config stops here with one clear line
    if config is not None:
        for warning in config.warnings:
            print(f"llm-tui: warning: {warning}", file=sys.stderr)
    terminal_input.install()
    app = LlmTuiApp(settings, config=config)
    watchdog = ExitWatchdog(app)
    watchdog.start()
    catch_signals(app, watchdog)
    try:
        app.run()
    finally:
        app.save_on_exit()  # after a crash too: the partial reply is kept
    if app.tracebacks:
        print("\n".join(app.tracebacks), file=sys.stderr)
    code = app.return_code or 0
    end_promptly(code)
    return code


def catch_signals(app: LlmTuiApp, watchdog: ExitWatchdog) -> None:
    """SIGTERM (exit 143) and SIGHUP (129: the SSH session went away): the app saves and leaves,
    and the watchdog ends the process if that takes longer than the grace.

    A Python-level handler runs in the main thread between two bytecodes, even in the middle of
    a long callback; the event loop's own handler (``loop.add_signal_handler``) would wait for
    that callback to end, so the app leaves its own off."""

    def on_signal(signum, frame) -> None:
        code = 128 + signum
        watchdog.begin(code)
        try:
            asyncio.get_running_loop().call_soon_threadsafe(app.hang_up, code)
        except RuntimeError:
            pass  # the app is not running (not yet, or no more): the watchdog ends the process

    app.handle_signals = False
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


class ExitWatchdog:
    """Ends the process ``grace`` seconds after quitting began, unless it ended by itself first.

    Quitting begins when the app's return code is set (``App.exit``: Ctrl+Q, a signal's
    ``hang_up``, a fatal error) or when ``begin`` is called (a signal, before the event loop
    has seen it). A daemon thread: a process that ends by itself does not wait for it.
    """

    def __init__(self, app, grace: float = EXIT_GRACE_SECONDS) -> None:
        self.app = app
        self.grace = grace
        self.code: int | None = None
        self._begun = threading.Event()
        self._terminal = _terminal_modes()  # read before Textual changes them
        self._thread = threading.Thread(target=self._watch, name="llm-tui-exit-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def begin(self, code: int) -> None:
        """Quitting begins now; the first code given is the process's."""
        if self.code is None:
            self.code = code
        self._begun.set()

    def _watch(self) -> None:
        while not self._begun.wait(0.1) and self.app.return_code is None:
            pass
        time.sleep(self.grace)
        code = self.code if self.code is not None else self.app.return_code or 0
        done = threading.Thread(target=self._last_words, name="llm-tui-last-words", daemon=True)
        done.start()
        done.join(LAST_WORDS_SECONDS)
        os._exit(code)

    def _last_words(self) -> None:
        try:
            self.app.save_on_exit()  # safe to call twice; the store takes writes from any thread
        except Exception:
            pass  # the main thread was in the middle of the UI: what was written as it happened stays
        _restore_terminal(self._terminal)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass


def _terminal_modes():
    """The terminal's modes (None where standard input is not a terminal)."""
    try:
        return termios.tcgetattr(sys.__stdin__.fileno())
    except Exception:
        return None


def _restore_terminal(modes) -> None:
    """What Textual does when it leaves, for a process that ends before Textual could."""
    if modes is None:
        return
    try:
        os.write(sys.__stderr__.fileno(), _LEAVE_APPLICATION_MODE.encode())  # where Textual draws
        termios.tcsetattr(sys.__stdin__.fileno(), termios.TCSANOW, modes)
    except Exception:
        pass  # the terminal has gone (SIGHUP)


def _still_working() -> list[threading.Thread]:
    """Threads that would keep the process alive or busy: Textual's workers and generation threads."""
    main = threading.main_thread()
    return [t for t in threading.enumerate()
            if t is not main and t.is_alive() and (not t.daemon or t.name == "llm-tui-generate")]


def end_promptly(code: int) -> None:
    """Everything is saved: give a stopped generation a moment to end, then end the process even
    if a thread is stuck inside native code (a long forward call cannot be interrupted)."""
    deadline = time.monotonic() + EXIT_GRACE_SECONDS
    while _still_working() and time.monotonic() < deadline:
        time.sleep(0.05)
    if _still_working():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
