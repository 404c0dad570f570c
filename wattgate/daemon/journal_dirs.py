"""The journal directories earlier runs used, so a changed `power.journal_dir` strands
no originals.

The daemon and `wattgate restore` look for a crashed run's journal in the journal_dir the
config names now. An operator who edits `power.journal_dir` while the daemon runs, after
which it crashes or is killed before a reload moves the journal (or the reload is never
sent), left the originals in the old directory: the next start journaled the lowered
values it found as the board's originals, its clean stop put those back, and the board
stayed capped until a reboot, with every exit status saying all was well.

So each start that takes over its journal_dir notes it in `daemon.state_dir` (which
outlives the runtime directory the journal is in, and which no journal_dir change moves).
The next start, and `wattgate restore`, first give back the originals in the journals of
the other directories noted there (`restore_earlier`); a directory leaves the note once
its journal is gone, and stays while a live daemon holds it or an original in it could
not be written back. Best effort: a note that cannot be read or written is logged and
changes nothing else.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Union

from wattgate.daemon.rollback import (
    JOURNAL_NAME,
    JournalHeld,
    RestoreReport,
    fsync_dir,
    take_over,
)
from wattgate.drivers.sysfs import Sysfs

log = logging.getLogger("wattgate.rollback")

NOTE_NAME = "power-journal-dirs.json"

PathLike = Union[str, "os.PathLike[str]"]


def noted(state_dir: PathLike) -> list[str]:
    """The journal directories noted in state_dir; none when there is no note, or one that
    cannot be read (logged)."""
    path = Path(state_dir) / NOTE_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s): journals of an earlier power.journal_dir are not "
                    "looked for", path, exc)
        return []
    dirs = data.get("journal_dirs") if isinstance(data, dict) else None
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        log.warning("%s holds no list of journal directories: ignored", path)
        return []
    return dirs


def note(state_dir: PathLike, dirs: list[str], was: list[str]) -> None:
    """Note dirs (absolute, in order, once each) in state_dir, unless that is what it
    noted already (`was`, as `noted` read it): written to a temporary file and renamed
    over the note, so a crash leaves the old note or the new one."""
    path = Path(state_dir) / NOTE_NAME
    unique = list(dict.fromkeys(os.path.abspath(d) for d in dirs))
    if unique == was:
        return  # the usual start: nothing changed, nothing written to flash
    if not os.path.isdir(state_dir):  # a controller run alone (simulate, a test): no daemon
        log.debug("no %s: power.journal_dir not noted", state_dir)
        return
    tmp = path.with_name(f".{NOTE_NAME}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"journal_dirs": unique}) + "\n")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        log.warning("cannot note power.journal_dir in %s (%s): after a change of it, a "
                    "crashed run's journal in the old one would not be found", path, exc)


def pending(dirs: list[str], directory: PathLike) -> list[str]:
    """Of the noted dirs, the ones other than `directory` (the journal_dir in use) that
    hold a journal: the ones restore_earlier gives back."""
    here = os.path.abspath(directory)
    return [earlier for earlier in dirs
            if earlier != here and os.path.lexists(os.path.join(earlier, JOURNAL_NAME))]


def restore_earlier(
    earlier_dirs: list[str], fs: Sysfs
) -> tuple[list[str], list[tuple[str, RestoreReport]]]:
    """Give back the originals in the journals of earlier_dirs (`pending`). Returns the
    directories to keep noting (a live daemon holds its journal, it cannot be used, or an
    original in it could not be written back) and each restore's report. The caller holds
    the board lock on fs's root, as for take_over."""
    kept: list[str] = []
    reports: list[tuple[str, RestoreReport]] = []
    for earlier in earlier_dirs:
        try:
            lock, journal, report = take_over(earlier, fs, create=False)
        except JournalHeld as exc:
            log.info("%s: left to it", exc)
            kept.append(earlier)
            continue
        except OSError as exc:
            log.error("the sysfs journal in %s, an earlier power.journal_dir, cannot be "
                      "used (%s): its originals are not restored", earlier, exc)
            kept.append(earlier)
            continue
        lock.release()
        reports.append((earlier, report))
        if report.restored or report.failed:
            log.warning("restored %d sysfs attribute(s) from the journal in %s, the "
                        "power.journal_dir of an earlier run%s", len(report.restored), earlier,
                        f"; {len(report.failed)} not restored, kept there"
                        if report.failed else "")
        if journal.attributes:
            kept.append(earlier)
    return kept, reports
