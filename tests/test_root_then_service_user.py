"""`sudo wattgate run` once, then the service as its own user, on the same directories.

An operator who runs the daemon by hand as root (to try a config, to debug) before
`systemctl start wattgate` left root-owned files in the service user's state_dir and
journal_dir: the locks (mode 0600), the event log and its reservation copy (0644). The
service's user could then neither lock nor write them: no event log at all, and no power
control, until an operator found and removed the files (or, in /run, until a reboot).
Files root makes in a directory of another user now belong to that user, as the sysfs
journal itself already did. Real files, a real second user (nobody) through run_as.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.conftest import run_as
from tests.fixtures.boards import materialize
from wattgate.daemon.eventlog import EventLog
from wattgate.daemon.rollback import take_over
from wattgate.drivers.sysfs import Sysfs

NOBODY = 65534  # uid and gid of nobody/nogroup on Debian


def _service_dir(base: Path, name: str) -> Path:
    """A directory of the service's user (nobody), as systemd's StateDirectory= makes."""
    directory = base / name
    directory.mkdir(mode=0o750)
    os.chown(directory, NOBODY, NOBODY)
    return directory


def test_the_event_log_root_made_is_the_service_users_next(reachable_tmp: Path) -> None:
    state = _service_dir(reachable_tmp, "state")
    by_root = EventLog(str(state / "events.db"))
    by_root.append("profile_change", 1.0, profile="eco")
    by_root.close(2.0)

    def as_the_service() -> str:
        log = EventLog(str(state / "events.db"))
        try:
            log.append("profile_change", 3.0, profile="perf")
            log.flush(4.0)
            return json.dumps([e.get("profile") for e in log.since(0, 10)])
        finally:
            log.close(5.0)

    report = run_as(NOBODY, NOBODY, as_the_service)
    assert report == json.dumps(["eco", "perf"]), report
    root_owned = [p.name for p in state.iterdir() if p.stat().st_uid == 0]
    assert root_owned == [], root_owned


def test_the_journal_lock_root_made_is_the_service_users_next(reachable_tmp: Path) -> None:
    journal_dir = _service_dir(reachable_tmp, "journal")
    board = reachable_tmp / "sys"
    materialize("rk3588", board)
    lock, _journal, _report = take_over(journal_dir, Sysfs(str(board)), create=True)
    lock.release()

    def as_the_service() -> str:
        held, _journal, _report = take_over(journal_dir, Sysfs(str(board)), create=True)
        held.release()
        return "locked"

    report = run_as(NOBODY, NOBODY, as_the_service)
    assert report == "locked", report
