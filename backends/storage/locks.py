"""One writer per conversation: an advisory lock held while an llm-tui process records it.

Two apps that ``--resume`` the same conversation would interleave their
turns into one history that neither model saw. The first holds a lock on a
small file beside the database; the second finds it held and continues in a
copy. The kernel drops the lock when its process ends, however it ends
(kill -9 included), so a crash never leaves a conversation locked.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system: no locking, as before
    fcntl = None


class ConversationLock:
    """The lock this process holds (at most one conversation at a time)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.held: int | None = None
        self._fd: int | None = None

    def _file(self, conv_id: int) -> Path:
        return self.folder / f"conversation-{conv_id}.lock"

    def acquire(self, conv_id: int) -> bool:
        """Hold ``conv_id``'s lock (letting go of any other); False when another process holds it."""
        if self.held == conv_id:
            return True
        self.release()
        if fcntl is None:
            self.held = conv_id
            return True
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._file(conv_id), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd, self.held = fd, conv_id
        return True

    def holder(self, conv_id: int) -> int | None:
        """The process id written by whoever holds ``conv_id``'s lock (None when unknown)."""
        try:
            return int(self._file(conv_id).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None
        self.held = None
