"""What is at a path, and why it cannot be used as what it is meant to be: a file of the
event log, its state directory, a lock file.

A path that is there but cannot serve (a regular file where a directory goes, a directory
where a file goes, a symbolic link that loops or points into a directory that is gone, as
a data partition moved or not mounted, one this process may not write) is a PathError
whose text names the path, where a link points and what is wrong: os.open and SQLite
said "No such file or directory" or "Too many levels of symbolic links" of the link alone.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable


class PathError(OSError):
    """A path is there but cannot be what it is used as: a regular file where a directory
    goes, a directory where a file goes, a symbolic link that cannot be followed to one,
    one this process may not write. Its text names the path and what is wrong."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


_KINDS = (
    (stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
    (stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
)


def kind_of(mode: int) -> str:
    """What a file of st_mode `mode` is, in words: "directory", "FIFO", ..."""
    return next((name for test, name in _KINDS if test(mode)), "special file")


def nearest_existing(directory: str) -> str:
    """`directory`, or the nearest directory above it that is there: where a directory
    that is not made yet would be made. OSError (its filename the path) for a path that
    cannot be looked up, other than one not there or under a file."""
    existing = directory
    while True:
        try:
            os.lstat(existing)
            return existing
        except (FileNotFoundError, NotADirectoryError):  # not there, or under a file
            existing = os.path.dirname(existing)


def expect_journal_dir(directory: str) -> None:
    """PathError when power.journal_dir cannot keep the sysfs journal for this process
    (expect_directory_for). One check for a reload, which refuses such a directory, and
    for check-config, which warns of it: `run` starts with it but writes no power settings,
    as the originals cannot be journaled."""
    expect_directory_for(directory, "the sysfs journal is kept there")


def expect_directory_for(directory: str, use: str) -> None:
    """PathError when this process could not use `directory` for `use` (in words, "the
    socket is made in it"): it, or the nearest directory above it that is there (where it
    would be made), is not a directory (a typo under a regular file) or is one this
    process may not write (a read-only place, another user's). Nothing is made."""
    # absolute: nearest_existing climbs to "/", and a relative path's dirname ends at "",
    # which it never leaves
    target = os.path.abspath(directory)
    existing = nearest_existing(target)
    expect(existing, stat.S_ISDIR, "a directory")
    expect_writable(existing, use if existing == target else f"{target} is made in it")


def expect(path: str, is_kind: Callable[[int], bool], wanted: str) -> bool:
    """Whether something is at path (links followed); PathError when it is not of the
    kind wanted, or is a symbolic link that cannot be followed to one (`broken_link`)."""
    directory = is_kind is stat.S_ISDIR
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if os.path.islink(path):
            broken_link(path, exc, directory)
        elif not isinstance(exc, FileNotFoundError):
            raise
        return False
    if not is_kind(mode):
        kind = kind_of(mode)
        link = (f"is a symbolic link to {os.readlink(path)}, which "
                if os.path.islink(path) else "")
        raise PathError(errno.ENOTDIR if directory else errno.EISDIR,
                        f"{link}is a {kind}, not {wanted}", path)
    return True


def broken_link(path: str, exc: OSError, directory: bool) -> None:
    """PathError naming the symbolic link at path, where it points and why it cannot be
    followed (exc, what os.stat said): a loop; a directory link to nothing; a file link
    into a directory that is not there (a data partition moved or not mounted), or is not
    one, or that this process may not write. A file link into a directory that is there
    and writable is a file not made yet: it is made where the link points, and nothing is
    raised."""
    target = os.readlink(path)
    if exc.errno == errno.ELOOP:
        raise PathError(errno.ELOOP, f"is a symbolic link to {target}, which never "
                        "resolves: a loop of symbolic links", path) from None
    if not isinstance(exc, FileNotFoundError):
        raise PathError(exc.errno, f"is a symbolic link to {target}, which cannot be "
                        f"followed: {exc.strerror}", path) from None
    if directory:
        raise PathError(errno.ENOENT, f"is a symbolic link to {target}, which does not "
                        "exist", path) from None
    expect_link_directory(path, f"{path} (a symbolic link to {target}, not there yet) is "
                          "made in it")


def expect_link_directory(path: str, why: str) -> None:
    """PathError naming the symbolic link at path when the directory of the file it
    resolves to is missing (a data partition moved or not mounted), is not a directory,
    or is one this process may not write; why: what is made in it."""
    directory = os.path.dirname(os.path.realpath(path))
    if not os.path.lexists(directory):
        raise PathError(errno.ENOENT, f"is a symbolic link to {os.readlink(path)}, whose "
                        f"directory {directory} does not exist", path)
    expect(directory, stat.S_ISDIR, "a directory")
    expect_writable(directory, why)


def expect_writable(path: str, why: str = "") -> None:
    """PathError, saying whose and which mode it is, when this process may not write
    path (and enter it, for a directory)."""
    info = os.stat(path)
    wanted = os.W_OK | (os.X_OK if stat.S_ISDIR(info.st_mode) else 0)
    if os.access(path, wanted, effective_ids=os.access in os.supports_effective_ids):
        return
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        code, what = errno.EROFS, "is on a read-only file system"
    else:
        code, what = errno.EACCES, f"is not writable by {whose(info)}"
    raise PathError(code, f"{what}; {why}" if why else what, path)


def whose(info: os.stat_result) -> str:
    """This process's uid and the file's owner and mode: why it may not use the file."""
    return (f"uid {os.geteuid()} (owner uid {info.st_uid}, gid {info.st_gid}, mode "
            f"{stat.S_IMODE(info.st_mode):04o})")


def hand_to_directory_owner(fd: int, path: str) -> None:
    """Give the file at `path`, which root has open as `fd`, to the owner of its directory,
    when that is another user.

    `sudo wattgate run` (an operator trying a config by hand) before the service runs as
    its own user: the locks, the event log and the journal root made in that user's
    state_dir and journal_dir were root's, mode 0600 or 0644, and the service could then
    neither lock nor write them. A file of any other owner is left as it is, and so is
    everything when this process is not root (only root may give a file away)."""
    if os.geteuid() != 0 or os.fstat(fd).st_uid != 0:
        return
    owner = os.stat(os.path.dirname(os.path.abspath(path)))
    if owner.st_uid != 0:
        os.fchown(fd, owner.st_uid, owner.st_gid)
