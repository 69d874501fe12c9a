"""``llm-tui`` in a real pseudo-terminal, as it runs over SSH: keys go in as bytes, the screen comes out."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class TerminalApp:
    """``llm-tui MODEL`` running in a pseudo-terminal, as over SSH."""

    def __init__(self, *args: str) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
        self.process = subprocess.Popen([sys.executable, "-m", "tui.cli", *args], stdin=slave, stdout=slave,
                                        stderr=slave, cwd=ROOT, env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.output += chunk

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def end_with(self, how: int | str, timeout: float = 15) -> float:
        """Send a signal (or type a key, given as text) and wait for the process to end; the
        seconds it took."""
        started = time.monotonic()
        if isinstance(how, str):
            self.type(how)
        else:
            self.process.send_signal(how)
        wait_until(lambda: self.process.poll() is not None, timeout, f"{how!r} did not end the process", self)
        return time.monotonic() - started

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        try:
            os.close(self.master)
        except OSError:
            pass


def wait_until(predicate, timeout: float, what: str, app: TerminalApp) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if app.process.poll() is not None or time.monotonic() > deadline:
            tail = bytes(app.output[-2000:]).decode("utf-8", "replace")
            raise AssertionError(f"{what}: exit code {app.process.poll()}; terminal tail: {tail!r}")
        time.sleep(0.2)
