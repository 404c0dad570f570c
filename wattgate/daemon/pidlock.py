"""An exclusive flock on a file that names its holder: one daemon per directory.

flock() belongs to the open file, so the kernel drops it when the holder dies (SIGKILL
included), and a second holder in the same process is refused as well. The file is never
removed: unlinking a lock file lets two processes lock two different inodes.

The message another process gets names the holder's pid as /proc/locks gives it, the
kernel's own record of who holds the lock, matched by the file's device and inode. The
file holds the holder's pid too, but only when the holder could write it: one that could
only open it read-only leaves the previous holder's pid there, a process long gone or an
unrelated one by now. So the file's pid is named only where /proc/locks names none (a
holder outside this process's pid namespace, such as another container's, or no /proc).

A lock file that is a symbolic link gone wrong (into a directory that is gone, such as a
data partition moved or not mounted; to a directory; a loop; into a directory this process
may not write) is named with where it points and what is wrong (PathError), by every
holder: the event log's and the sysfs journal's. Left to os.open, these said "No such file
or directory", "Is a directory" or "Too many levels of symbolic links" naming only the
link, and a link into a directory that could not be written was "locked" read-only, found
missing, and not locked at all. The checks are pathcheck.py's, which the event log's other
files get too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from typing import Optional

from wattgate.daemon.pathcheck import expect, hand_to_directory_owner


class LockHeld(Exception):
    """Another process (or another open file in this one) holds the lock."""

    def __init__(self, path: str, holder: str) -> None:
        self.path = path
        self.pid = holder if holder.isdigit() else None
        super().__init__(f"{path} is held by another wattgate process"
                         f"{f' (pid {self.pid})' if self.pid else ''}")


class HeldLock:
    """An flock held through an fd of this object's own. release() closes it; so does
    garbage collection, as the kernel drops a killed process's lock."""

    def __init__(self) -> None:
        self._fd: Optional[int] = None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __del__(self) -> None:
        self.release()


class DirectoryLock(HeldLock):
    """An exclusive flock on a directory itself (lock_dir): for one this process may not
    write a lock file in, such as a board's sysfs root."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def acquire(self) -> None:
        """Lock, or LockHeld naming the holder's pid."""
        self._fd = lock_dir(self.path)


def lock_file(path: str, create: bool = True) -> Optional[int]:
    """The fd that holds an exclusive flock on path, our pid written in it; LockHeld when
    another holds it. ``create=False`` (a directory this process cannot write): lock the
    file if it is there, read-only; None when it is not, as no other process can have
    made it either. PermissionError for a file this process may not open, LockHeld in
    its place when another process holds it: that is what keeps this one out. PathError
    for something at path that cannot be a lock file: not a regular file, or a symbolic
    link that cannot be followed to one (`expect_lock_file`)."""
    expect_lock_file(path)
    try:
        if create:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        else:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
    except PermissionError:
        try:
            holder = _flock_holder(os.stat(path))
        except OSError:
            holder = ""
        if holder:
            raise LockHeld(path, holder) from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        # The kernel's word first: the file's pid is stale where the holder could not write
        # its own (it opened the file read-only, after another holder wrote one).
        holder = _flock_holder(os.fstat(fd))
        if not holder:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise LockHeld(path, holder) from None
    except BaseException:
        os.close(fd)
        raise
    if create:
        hand_to_directory_owner(fd, path)
        with contextlib.suppress(OSError):  # the pid is only for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def expect_lock_file(path: str) -> None:
    """PathError naming path, and for a symbolic link where it points, when what is at path
    cannot be a lock file: a directory or a special file, a link that loops, one to a
    directory, or one to a file not made yet whose directory is not there or may not be
    written by this process. Nothing at path, or a link to a file not made yet in a
    directory this process may write (the lock is made where it points), is no error."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return  # nothing there, or nothing this process can look at: left to os.open
    if not stat.S_ISREG(mode):  # a symbolic link (lstat), a directory, a special file
        expect(path, stat.S_ISREG, "a file")


def lock_dir(path: str) -> int:
    """The fd that holds an exclusive flock on the directory itself; LockHeld when another
    holds it. For a directory that is not ours to write a lock file in (a board's sysfs
    root): flock works on any open file, and the holder's pid comes from /proc/locks."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _flock_holder(os.fstat(fd))
        os.close(fd)
        raise LockHeld(path, holder) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _flock_holder(info: os.stat_result) -> str:
    """The pid /proc/locks gives for a flock on the file ``info`` describes ("" if none):
    its lines read "1: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF", the
    device numbers in hex. A holder outside the pid namespace /proc belongs to is left out
    (a container's /proc); a pid of 0, which says the same, is no holder either."""
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                words = line.split()
                if (len(words) > 5 and words[1] == "FLOCK" and words[5] == wanted
                        and words[4].isdigit() and int(words[4]) > 0):
                    return words[4]
    except OSError:
        pass
    return ""
