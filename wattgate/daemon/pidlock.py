"""An exclusive flock on a file that names its holder: one daemon per directory.

flock() belongs to the open file, so the kernel drops it when the holder dies (SIGKILL
included), and a second holder in the same process is refused as well. The file is never
removed: unlinking a lock file lets two processes lock two different inodes. It holds the
holder's pid, for the message another process gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Optional


class LockHeld(Exception):
    """Another process (or another open file in this one) holds the lock."""

    def __init__(self, path: str, holder: str) -> None:
        self.path = path
        self.pid = holder if holder.isdigit() else None
        super().__init__(f"{path} is held by another wattgate process"
                         f"{f' (pid {self.pid})' if self.pid else ''}")


def lock_file(path: str, create: bool = True) -> Optional[int]:
    """The fd that holds an exclusive flock on path, our pid written in it; LockHeld when
    another holds it. ``create=False`` (a directory this process cannot write): lock the
    file if it is there, read-only; None when it is not, as no other process can have
    made it either."""
    if create:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    else:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise LockHeld(path, holder) from None
    except BaseException:
        os.close(fd)
        raise
    if create:
        with contextlib.suppress(OSError):  # the pid is only for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
