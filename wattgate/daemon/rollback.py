"""The sysfs journal: every power write can be undone, even after SIGKILL.

Before the first write to an attribute its original text is appended to
``<state_dir>/sysfs-journal.json``, written atomically (temp file, fsync,
rename, fsync of the directory), and only then is the attribute written. So at
any instant the journal holds the original of every attribute that may have
changed. ``restore()`` (normal exit, SIGTERM, SIGINT) writes the originals back
in reverse order of first write and removes the journal; ``restore_pending()``
at start does the same for a journal left by a crash. A failure to restore one
attribute is logged and never stops the others (DESIGN.md, "Rollback").

All power writes go through ``JournaledWriter``, which the drivers accept
wherever they take a writer, so no write can bypass the journal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from wattgate.drivers.sysfs import AttributeMissing, Sysfs, SysfsError

log = logging.getLogger("wattgate.rollback")

JOURNAL_NAME = "sysfs-journal.json"
FORMAT_VERSION = 1


@dataclass
class RestoreReport:
    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        self._load()

    # -- persistence -------------------------------------------------------------

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("unreadable sysfs journal %s (%s); keeping it aside", self.path, exc)
            os.replace(self.path, self.path.with_suffix(".json.corrupt"))
            return
        self._root = str(data.get("root", self._root))
        for entry in data.get("entries", []):
            self._entries.setdefault(str(entry["attribute"]), str(entry["original"]))

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "root": self._root,
            "entries": [{"attribute": a, "original": o} for a, o in self._entries.items()],
        }
        tmp = self.path.with_name(f".{JOURNAL_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(data, indent=1).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        _fsync_dir(self.state_dir)

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        for stale in self.state_dir.glob(f".{JOURNAL_NAME}.*.tmp"):
            stale.unlink(missing_ok=True)
        if self.state_dir.exists():
            _fsync_dir(self.state_dir)

    # -- recording -----------------------------------------------------------------

    @property
    def attributes(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def original(self, attribute: str) -> Optional[str]:
        with self._lock:
            return self._entries.get(attribute)

    def record(self, attribute: str, original: Optional[str] = None) -> None:
        """Save the attribute's original (read now unless given) if not saved yet."""
        with self._lock:
            if attribute in self._entries:
                return
            text = self.fs.read_raw(attribute) if original is None else original + "\n"
            self._entries[attribute] = text
            self._save()

    # -- restoring -----------------------------------------------------------------

    def restore(self) -> RestoreReport:
        """Write every original back, last first; drop the journal.

        An attribute that fails for a reason that may pass (busy, denied) stays in
        the journal so the next start tries again; one that vanished is dropped.
        """
        with self._lock:
            report = RestoreReport()
            fs = self.fs if str(self.fs.root) == self._root else Sysfs(self._root, self.fs.io)
            kept: dict[str, str] = {}
            for attribute in reversed(list(self._entries)):
                original = self._entries[attribute]
                try:
                    if fs.read_raw(attribute) == original:
                        report.unchanged.append(attribute)
                        continue
                    fs.write_raw(attribute, original)
                    report.restored.append(attribute)
                except AttributeMissing as exc:
                    report.failed[attribute] = str(exc)
                    log.error("cannot restore %s: %s", attribute, exc)
                except (SysfsError, OSError) as exc:
                    report.failed[attribute] = str(exc)
                    kept[attribute] = original
                    log.error("cannot restore %s: %s", attribute, exc)
            self._entries = dict(reversed(list(kept.items())))
            if self._entries:
                self._save()
            else:
                self._remove()
            if report.restored:
                log.info("restored %d sysfs attribute(s)", len(report.restored))
            return report

    def restore_pending(self) -> RestoreReport:
        """At start: undo whatever a previous run (crashed or killed) left changed."""
        with self._lock:
            if not self._entries:
                self._remove()
                return RestoreReport()
            log.warning(
                "found %s from a previous run: restoring %d attribute(s)",
                self.path,
                len(self._entries),
            )
            return self.restore()


class JournaledWriter:
    """The daemon's only way to write sysfs: journal first, then write."""

    def __init__(self, journal: SysfsJournal) -> None:
        self.journal = journal
        self._lock = threading.Lock()

    @property
    def fs(self) -> Sysfs:
        return self.journal.fs

    def write(self, attribute: str, value: str, *, restore: Optional[str] = None) -> bool:
        """Write ``value`` unless already there; True when written.

        ``restore`` is what to write back when reading the attribute does not give
        a writable value (galcore's gpu_govern reads a report, takes a mode name).
        """
        value = str(value).strip()
        with self._lock:
            if self.fs.read(attribute) == value:
                return False
            self.journal.record(attribute, restore)
            self.fs.write_raw(attribute, value + "\n")
            return True
