"""The sysfs journal: every power write can be undone, even after SIGKILL.

Before the first write to an attribute its original text is appended to
``<state_dir>/sysfs-journal.json``, written atomically (temp file, fsync,
rename, fsync of the directory), and only then is the attribute written. So at
any instant the journal holds the original of every attribute that may have
changed. ``restore()`` (normal exit, SIGTERM, SIGINT) writes the originals back
in reverse order of first write and removes the journal (a governor found as userspace
has its pinned frequency journaled just before it, so the pin goes back after it);
``restore_pending()`` at start does the same for a journal left by a crash. A failure to restore one
attribute is logged and never stops the others (DESIGN.md, "Rollback"). A journal
written on an earlier boot under /sys is dropped instead: the reboot reset sysfs.

All power writes go through ``JournaledWriter``, which the drivers accept
wherever they take a writer, so no write can bypass the journal. A write whose
original could not be saved is refused, and stays refused on a retry.

One journal directory serves one daemon at a time: ``JournalLock`` holds an
exclusive lock on ``<state_dir>/sysfs-journal.lock`` for the daemon's life, so a
second daemon neither restores the first one's changes under it nor overwrites
its journal. ``take_over`` is how a journal directory is opened, by the daemon at start and
by `wattgate restore` after a stop: lock, read, then restore what is left.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from wattgate.daemon.boot import boot_id
from wattgate.daemon.pathcheck import PathError, hand_to_directory_owner
from wattgate.daemon.pidlock import DirectoryLock, HeldLock, LockHeld, lock_file
from wattgate.drivers.governors import USERSPACE, pinned_frequency
from wattgate.drivers.sysfs import AttributeMissing, Sysfs, SysfsError

log = logging.getLogger("wattgate.rollback")

JOURNAL_NAME = "sysfs-journal.json"
LOCK_NAME = "sysfs-journal.lock"
ASIDE = ".corrupt"  # an unusable journal is kept as <journal>.corrupt, then .corrupt.N
FORMAT_VERSION = 1
# Frequency limits: cpufreq's scaling_{min,max}_freq, devfreq's {min,max}_freq. Since Linux
# 5.3 each is a QoS request, and the file shows the aggregate of all of them (a cooling
# device's cap included), not the request a store sets: one that reads as its original
# may still hold the daemon's request under a cap, so restore writes these back always.
LIMITS = frozenset({"scaling_min_freq", "scaling_max_freq", "min_freq", "max_freq"})
SYSFS = "/sys"  # where the kernel's sysfs is mounted: a reboot resets it, a fake tree stays


class JournalError(OSError):
    """The journal cannot be used; nothing may be written to sysfs without it."""

    def __init__(self, message: str, err: int = 0) -> None:
        super().__init__(err or None, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class JournalHeld(JournalError):
    """Another process holds the journal lock: a live daemon, whose journal and settings
    are its own. Apart from the other JournalErrors so `wattgate restore` can say so."""


class RestoreBusy(Exception):
    """Another thread's restore of this journal did not end in the time given: a store of
    it hangs in a driver. Its originals stay in the journal until that restore ends."""

    def __init__(self, attribute: Optional[str]) -> None:
        super().__init__(attribute)
        self.attribute = attribute  # the one it is writing, if it is writing one


class JournalLock(HeldLock):
    """An exclusive, non-blocking lock on ``<state_dir>/sysfs-journal.lock`` (pidlock.py:
    dropped by the kernel when the holder dies, never removed, naming its holder)."""

    def __init__(self, state_dir: Union[str, os.PathLike[str]]) -> None:
        super().__init__()
        self.path = Path(state_dir) / LOCK_NAME

    def acquire(self, *, create: bool = True) -> None:
        """Lock, or JournalError naming the holder. ``create=False`` (a directory this
        process cannot write): lock the file if it is there; if it is not, no daemon
        holds this directory, since it could not have created it either.

        A lock file that is a symbolic link gone wrong (dangling into a directory that is
        gone, a loop, to a directory, into a directory this process may not write) or is
        not a regular file is a JournalError naming it and where it points (pathcheck's
        PathError, the event log's lock says the same): os.open said only "No such file
        or directory" of the link, and power control went off with no word of its target."""
        try:
            self._fd = lock_file(str(self.path), create)
        except LockHeld as held:
            raise JournalHeld(f"{held}: one daemon per journal_dir") from None
        except PathError as exc:
            raise JournalError(str(exc), exc.errno or 0) from None


@dataclass
class RestoreReport:
    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    # What of the journal could not be used at all (a torn file set aside, skipped
    # entries): originals that were not given back, though no attribute failed.
    unusable: list[str] = field(default_factory=list)
    # Left as they are, originals kept in the journal: a store of this process to them has
    # not returned, so it may still land after anything written now.
    kept: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unusable


def fsync_dir(directory: Path) -> None:
    """Sync a directory, so a file created or renamed in it survives a power cut (fsync of
    the file alone does not make its name durable: fsync(2))."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _relative(attribute: str) -> bool:
    parts = attribute.split("/")
    return bool(attribute) and not attribute.startswith("/") and ".." not in parts


class SysfsJournal:
    """Originals of the attributes changed since start, persisted in ``state_dir``."""

    def __init__(self, state_dir: Union[str, os.PathLike[str]], fs: Sysfs) -> None:
        self.state_dir = Path(state_dir)
        self.fs = fs
        self.path = self.state_dir / JOURNAL_NAME
        self._lock = threading.RLock()
        # attribute -> original text, in order of first write (dicts keep order)
        self._entries: dict[str, str] = {}
        self._root = str(fs.root)
        # what _load could not use, for the report of restore_pending
        self._unusable: list[str] = []
        self._restoring: Optional[str] = None  # the attribute restore() is writing
        self.set_aside: list[Path] = []  # the files _load kept aside, reported in _unusable
        self._boot = boot_id()  # saved with the entries: whose boot's originals they are
        self._load()

    # -- persistence -------------------------------------------------------------

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except PermissionError as exc:
            # Not ours to set aside (a run as another user left it): the originals in it
            # are still the only way back, so refuse to write rather than lose them.
            raise JournalError(
                f"sysfs journal {self.path} is not readable by this user "
                f"(owner uid {self._owner()}): restore it as that user (removed, the "
                f"originals it holds are lost)",
                exc.errno or 0,
            ) from exc
        except ValueError as exc:  # not UTF-8
            self._set_aside(str(exc))
            return
        except OSError as exc:  # EIO, ENOTDIR...: the originals may still be in there
            raise JournalError(f"sysfs journal {self.path} cannot be read: {exc}",
                               exc.errno or 0) from exc
        try:
            root, journaled_boot, entries, problems = self._parse(text)
        except ValueError as exc:  # a JournalError (an OSError) goes through
            self._set_aside(str(exc))
            return
        except RecursionError:  # json.loads of arrays or objects nested past the limit
            self._set_aside("nested too deep to parse")
            return
        if problems:
            self._keep_skipped(text, problems)
        self._root = root
        if self._reset_by_reboot(journaled_boot, root):
            log.warning("sysfs journal %s is from an earlier boot (%s): the reboot reset %s, "
                        "so its %d original(s) are not written back over this boot's values",
                        self.path, journaled_boot, root, len(entries))
            return
        self._entries = entries

    def _reset_by_reboot(self, journaled: Optional[str], root: str) -> bool:
        """Whether the originals were journaled on an earlier boot under the kernel's sysfs,
        which that reboot reset: what the board has now is its own (or its boot scripts')
        values, and the old originals written back would undo them. A journal without a
        boot id (none known) is restored as before; so is one under a fake tree, whose files
        outlive a reboot with the daemon's values in them."""
        if journaled is None or self._boot is None or journaled == self._boot:
            return False
        real = os.path.realpath(root)
        return real == SYSFS or real.startswith(SYSFS + "/")

    def _keep_skipped(self, text: str, problems: list[tuple[str, object]]) -> None:
        """Say which entries were skipped, and keep the journal's text for a look: the good
        entries are still originals to restore, whether or not the copy can be written.
        In a journal_dir that cannot be written (remounted read-only after a crash) the
        skipped entries themselves go in the message, the only record of them left."""
        skipped = "; ".join(why for why, _ in problems)
        aside = self._aside()
        try:
            aside.write_text(text, encoding="utf-8")
        except OSError as exc:
            with contextlib.suppress(OSError):  # a partial copy (ENOSPC) is no record
                aside.unlink(missing_ok=True)
            entries = ", ".join(json.dumps(entry) for _, entry in problems)
            kept = f"no copy could be kept ({exc.strerror or exc}); they were {entries}"
        else:
            self.set_aside.append(aside)
            kept = f"a copy is kept as {aside}"
        self._unusable.append(f"sysfs journal {self.path}: skipped {skipped}: those "
                              f"originals were not restored; {kept}")
        log.error("%s", self._unusable[-1])

    def _parse(
        self, text: str
    ) -> tuple[str, Optional[str], dict[str, str], list[tuple[str, object]]]:
        """Root, boot id (None: not named), entries and the entries skipped (why, and the
        entry) of a journal's text; ValueError naming what is wrong when nothing in it can
        be used."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"not a JSON object but {type(data).__name__}")
        version = data.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            # Written by another release: leave it for that release to restore.
            raise JournalError(
                f"sysfs journal {self.path} has format version {version!r}, "
                f"this wattgate reads {FORMAT_VERSION}: restore it with the release that "
                "wrote it or remove it"
            )
        root = data.get("root", self._root)
        if not isinstance(root, str) or not root:
            raise ValueError(f"'root' is {root!r}, not a path")
        journaled_boot = data.get("boot_id")
        if journaled_boot is not None and not isinstance(journaled_boot, str):
            raise ValueError(f"'boot_id' is {journaled_boot!r}, not text")
        items = data.get("entries", [])
        if not isinstance(items, list):
            raise ValueError(f"'entries' is {type(items).__name__}, not a list")
        entries: dict[str, str] = {}
        problems: list[tuple[str, object]] = []
        for index, entry in enumerate(items):
            if not isinstance(entry, dict):
                problems.append((f"entries[{index}] is {type(entry).__name__}, not an object",
                                 entry))
                continue
            attribute, original = entry.get("attribute"), entry.get("original")
            if not isinstance(attribute, str) or not _relative(attribute):
                problems.append((f"entries[{index}].attribute {attribute!r} is not a "
                                 "relative sysfs path", entry))
            elif not isinstance(original, str):
                problems.append((f"entries[{index}].original of {attribute} is "
                                 f"{original!r}, not text", entry))
            else:
                entries.setdefault(attribute, original)
        return root, journaled_boot or None, entries, problems

    def _owner(self) -> str:
        try:
            return str(self.path.stat().st_uid)
        except OSError:
            return "unknown"

    def _aside(self) -> Path:
        """Where an unusable journal, or a copy of one with bad entries, is kept: `.corrupt`,
        or `.corrupt.N` beside those kept before. One kept earlier may be the only record
        of the board's own values, so it is never written over."""
        aside = self.path.with_name(self.path.name + ASIDE)
        for number in itertools.count(1):
            if not os.path.lexists(aside):
                break
            aside = self.path.with_name(f"{self.path.name}{ASIDE}.{number}")
        return aside

    def _set_aside(self, why: str) -> None:
        """Move an unreadable journal out of the way so writes can be journaled again, and
        say so: the originals it may hold are not restored, the board may still have a
        previous run's settings, and only the kept file says which. One that cannot be
        moved (a journal_dir remounted read-only) is a JournalError naming the journal: it
        stays where it is, and no write may be journaled over it."""
        aside = self._aside()
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            raise JournalError(
                f"sysfs journal {self.path} is unusable ({why}) and cannot be moved aside "
                f"({exc.strerror or exc}): none of its originals were restored, a previous "
                "run's settings may still be in place; read it, write back what the board "
                "needs, then remove it", exc.errno or 0) from exc
        self.set_aside.append(aside)
        self._unusable.append(
            f"unusable sysfs journal {self.path} ({why}): none of its originals were "
            f"restored, a previous run's settings may still be in place; it is kept as "
            f"{aside}")
        log.error("%s", self._unusable[-1])

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "root": self._root,
            "boot_id": self._boot,
            "entries": [{"attribute": a, "original": o} for a, o in self._entries.items()],
        }
        tmp = self.path.with_name(f".{JOURNAL_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            # `sudo wattgate restore` keeping what it could not put back: a root-owned 0600
            # journal would shut the daemon's user out of it, and with no readable journal
            # the daemon writes no power settings at all
            hand_to_directory_owner(fd, str(tmp))
            # A filesystem that fills up takes what fits and returns the short count without
            # an error; only writing the rest raises (ENOSPC). A short journal renamed into
            # place would be unreadable after a crash, and every original in it lost.
            left = memoryview(json.dumps(data, indent=1).encode())
            while left:
                left = left[os.write(fd, left):]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)  # the space it holds may be what the next save needs
            raise
        os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(self.state_dir)

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        for stale in self.state_dir.glob(f".{JOURNAL_NAME}.*.tmp"):
            stale.unlink(missing_ok=True)
        if self.state_dir.exists():
            fsync_dir(self.state_dir)

    # -- recording -----------------------------------------------------------------

    @property
    def root(self) -> str:
        """The sysfs root the originals go back under: the one they were read from."""
        return self._root

    @property
    def attributes(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def original(self, attribute: str) -> Optional[str]:
        with self._lock:
            return self._entries.get(attribute)

    def record(self, attribute: str, original: Optional[str] = None) -> None:
        """Save the attribute's original (read now unless given) if not saved yet.

        Raises a JournalError naming the journal (and remembers nothing) when the journal
        cannot be saved, so the caller does not write and a retry saves again.
        """
        with self._lock:
            if attribute in self._entries:
                return
            root = str(self.fs.root)
            if not self._entries:
                self._root = root
            elif self._root != root:
                raise JournalError(
                    f"sysfs journal {self.path} still holds {len(self._entries)} "
                    f"attribute(s) under {self._root}, not {root}: restore those first"
                )
            text = self.fs.read_raw(attribute) if original is None else original + "\n"
            self._entries[attribute] = text
            try:
                self._save()
            except BaseException as exc:
                del self._entries[attribute]
                if isinstance(exc, OSError) and not isinstance(exc, JournalError):
                    # Named as the journal's: as the store's own failure, a full /run read
                    # as a driver refusing every knob.
                    raise JournalError(
                        f"its original value cannot be saved in the sysfs journal "
                        f"{self.path} ({exc.strerror or exc}), so it is not written",
                        exc.errno or 0,
                    ) from exc
                raise

    # -- restoring -----------------------------------------------------------------

    def restore(self, keep: Collection[str] = (), wait: Optional[float] = None) -> RestoreReport:
        """Write every original back, last first; drop the journal.

        The kernel refuses some values until another attribute is back: intel_pstate
        takes no EPP but performance while the governor is performance (EBUSY), and a
        scaling_min_freq above the current scaling_max_freq is EINVAL. The profile wrote
        them in the order that works forward, so last first is not always the order that
        works backward: what is refused is tried again after the others, as long as a
        round gives something back. An attribute that still fails for a reason that may
        pass (busy, denied) stays in the journal so the next start tries again; one that
        vanished is dropped. One that reads as its original is left as it is
        (``RestoreReport.unchanged``), but a frequency limit (``LIMITS``) is written back
        whatever it reads: under a thermal cap at the original it reads the cap, while the
        daemon's raised request stays in the kernel and applies once the cap lifts.

        The attributes in ``keep`` are neither written nor dropped (``RestoreReport.kept``):
        a store to them has not returned and may land after this one would. ``wait``: how
        long to wait for another thread's restore of this journal (RestoreBusy), by
        default for as long as it takes.
        """
        if not self._lock.acquire(timeout=-1 if wait is None else wait):
            raise RestoreBusy(self._restoring)
        try:
            return self._restore(set(keep))
        finally:
            self._restoring = None
            self._lock.release()

    def _restore(self, keep: set[str]) -> RestoreReport:
        # A pinned frequency can go back only once its governor is userspace again, and
        # devfreq's set_freq is not there before: it waits while its governor does.
        governor_of = {pinned: a for a in self._entries
                       if (pinned := pinned_frequency(a)) in self._entries}
        keep |= {pinned for pinned, governor in governor_of.items() if governor in keep}
        report = RestoreReport(kept=[a for a in self._entries if a in keep])
        fs = self.fs if str(self.fs.root) == self._root else Sysfs(self._root, self.fs.io)
        refused: dict[str, str] = {}  # attribute -> why, for the last round's refusals
        waiting = [a for a in reversed(list(self._entries)) if a not in keep]
        while waiting:
            refused = {}
            for attribute in waiting:
                self._restoring = attribute
                try:
                    if (attribute.rpartition("/")[2] not in LIMITS
                            and fs.read_raw(attribute) == self._entries[attribute]):
                        report.unchanged.append(attribute)
                    else:
                        fs.write_raw(attribute, self._entries[attribute])
                        report.restored.append(attribute)
                except AttributeMissing as exc:
                    if governor_of.get(attribute) in refused:
                        refused[attribute] = str(exc)
                        continue
                    report.failed[attribute] = str(exc)
                    log.error("cannot restore %s: %s", attribute, exc)
                except (SysfsError, OSError) as exc:
                    refused[attribute] = str(exc)
            waiting = [] if len(refused) == len(waiting) else list(refused)
        for attribute, why in refused.items():
            report.failed[attribute] = why
            log.error("cannot restore %s: %s", attribute, why)
        for attribute in report.kept:
            log.warning("%s left as it is, its original kept in %s: a store to it has not "
                        "returned and may still land; the next start gives it back",
                        attribute, self.path)
        self._entries = {a: text for a, text in self._entries.items()
                         if a in refused or a in keep}
        try:
            if self._entries:
                self._save()
            else:
                self._remove()
        except OSError as exc:
            # The attributes are back already; a journal that still names them only
            # makes the next start find them unchanged.
            log.error("restored, but cannot update the sysfs journal %s: %s", self.path, exc)
        if report.restored:
            log.info("restored %d sysfs attribute(s)", len(report.restored))
        return report

    def restore_pending(self, keep: Collection[str] = ()) -> RestoreReport:
        """At start: undo whatever a previous run (crashed or killed) left changed, but
        ``keep`` (restore()). The report names too what of the journal could not be read
        (``unusable``)."""
        with self._lock:
            if not self._entries:
                self._remove()
                return RestoreReport(unusable=list(self._unusable))
            log.warning(
                "found %s from a previous run: restoring %d attribute(s)",
                self.path,
                len(self._entries),
            )
            report = self.restore(keep)
            report.unusable = list(self._unusable)
            return report


def set_aside_journals(directory: Union[str, os.PathLike[str]]) -> list[Path]:
    """The journals kept aside in ``directory`` (SysfsJournal._aside), oldest first. Nothing
    removes them: the originals in one may be the only record of the board's own values,
    and none of them were written back. [] when the directory cannot be listed."""
    found: list[tuple[int, Path]] = []
    prefix = JOURNAL_NAME + ASIDE
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        rest = name[len(prefix):] if name.startswith(prefix) else None
        if rest == "":
            found.append((0, Path(directory) / name))
        elif rest is not None and rest[:1] == "." and rest[1:].isdigit():
            found.append((int(rest[1:]), Path(directory) / name))
    return [path for _, path in sorted(found)]


class JournaledWriter:
    """The daemon's only way to write sysfs: journal first, then write."""

    def __init__(self, journal: SysfsJournal) -> None:
        self.journal = journal
        self._lock = threading.Lock()

    @property
    def fs(self) -> Sysfs:
        return self.journal.fs

    def write(
        self, attribute: str, value: str, *, restore: Optional[str] = None, always: bool = False
    ) -> bool:
        """Write ``value`` unless already there (``always``: even then, sysfs.Writer); True
        when written.

        ``restore`` is what to write back when reading the attribute does not give
        a writable value (galcore's gpu_govern reads a report, takes a mode name).
        """
        value = str(value).strip()
        with self._lock:
            if not always and self.fs.read(attribute) == value:
                return False
            if self.journal.original(attribute) is None:
                self._record_pinned(attribute)
            self.journal.record(attribute, restore)
            self.fs.write_raw(attribute, value + "\n")
            return True

    def _record_pinned(self, governor_attribute: str) -> None:
        """Journal the frequency the userspace governor is pinned at, before the first
        write to the governor store it is found in: started again by the restore, that
        governor would pin the frequency the daemon's governor last chose. Journaled
        first, the pin is restored after the governor (restore: last first). A pin that
        cannot be read (no such attribute on this board) is not kept."""
        pinned = pinned_frequency(governor_attribute)
        if pinned is None or self.fs.read_opt(governor_attribute) != USERSPACE:
            return
        text = self.fs.read_opt(pinned)
        if text is None or not text.isdigit():
            log.warning("%s is %s: the frequency the userspace governor is pinned at is "
                        "not journaled, and the restore leaves it where the governor starts",
                        pinned, "unreadable" if text is None else repr(text))
            return
        self.journal.record(pinned, text)


def take_over(
    directory: Union[str, os.PathLike[str]],
    fs: Sysfs,
    *,
    create: bool,
    inherited: Optional[Mapping[str, str]] = None,
    keep: Collection[str] = (),
) -> tuple[JournalLock, SysfsJournal, RestoreReport]:
    """Lock ``directory``, read its journal, and restore what a previous run left changed.

    One path for the daemon's start and for `wattgate restore`, so the two cannot differ
    in what they give back and what they keep. The lock comes before the read: a journal
    another daemon holds is that daemon's (JournalHeld). ``create`` as for
    ``JournalLock.acquire``. ``inherited`` (originals a structural reload carried over from
    another journal_dir, text as read) is recorded before anything else. What could not be
    restored stays in the journal, and so does ``keep`` (SysfsJournal.restore). The caller
    owns the returned lock; on an error it is released here.

    The caller has locked ``fs``'s root (the board); a journal whose originals are under
    another root (power.sysfs_root changed since the run that wrote it) has that root
    locked here too, for the restore: JournalHeld when a live daemon drives it, whose
    settings it would undo for good.
    """
    lock = JournalLock(directory)
    lock.acquire(create=create)
    elsewhere: Optional[DirectoryLock] = None
    try:
        journal = SysfsJournal(directory, fs)
        elsewhere = _lock_journal_root(journal, fs)
        earlier = [p for p in set_aside_journals(directory) if p not in journal.set_aside]
        if earlier:
            # Said at every start until removed: the daemon goes on, but nothing else would
            # tell an operator who reads only the journal (`wattgate restore` says it too).
            log.warning("%d sysfs journal(s) set aside earlier as unusable: %s; none of their "
                        "originals were restored (read them, write back what the board "
                        "needs, remove them)", len(earlier), ", ".join(map(str, earlier)))
        for attribute, original in (inherited or {}).items():
            journal.record(attribute, original.removesuffix("\n"))
        return lock, journal, journal.restore_pending(keep)
    except BaseException:
        lock.release()
        raise
    finally:
        if elsewhere is not None:
            elsewhere.release()


def _lock_journal_root(journal: SysfsJournal, fs: Sysfs) -> Optional[DirectoryLock]:
    """The board lock on the journal's root, when it has originals to go back under a root
    that is not ``fs``'s; None when there is nothing to lock (no originals, the same
    directory, or one that is not there, which no daemon can drive)."""
    root = journal.root
    if not journal.attributes:
        return None
    with contextlib.suppress(OSError):
        if os.path.samefile(root, fs.root):
            return None  # locked already; a second flock of this process would be refused
    board = DirectoryLock(root)
    try:
        board.acquire()
    except FileNotFoundError:
        return None
    except LockHeld as held:
        raise JournalHeld(
            f"sysfs journal {journal.path} holds originals under {root}, not "
            f"power.sysfs_root {fs.root}, and another wattgate"
            f"{f' (pid {held.pid})' if held.pid else ''} drives {root}: the journal is "
            "kept and nothing is written there until that daemon stops") from None
    return board
