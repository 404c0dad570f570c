"""The event log's once-a-second flush does not hold up the clients.

A flush waits for a sync of the -wal (on an SD card under writeback, a second or more) or
for another process's lock on the database, up to BUSY_TIMEOUT_MS. Run on the event loop,
that wait held every client's requests and results for as long. A slow card cannot be
made here, so the wait is the lock's: the test holds a write lock on events.db from
another connection, as a backup tool or an `sqlite3` shell would, and the daemon runs with
BUSY_TIMEOUT_MS raised to an hour, so a flush on the loop would hold it for the whole test.
A status request must still be answered while the flush waits, and the event it was
writing must be in the log once the lock is let go.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import pinnable_board
from wattgate.client import Client
from wattgate.config import load_config

# `wattgate run` whose flushes wait an hour for a lock on the event log
PATIENT_FLUSH = """
import sys
import wattgate.daemon.eventlog as eventlog
from wattgate.cli import main
eventlog.BUSY_TIMEOUT_MS = 3_600_000
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def start_patient(start_daemon: Any, tmp_path: Path) -> tuple[Any, Path]:
    """A daemon on a pinnable board whose flushes wait an hour for a lock, and its
    state_dir, once it answers."""
    config = pinnable_board(
        tmp_path, camera={"source": "synthetic:empty", "width": 160, "height": 120})
    daemon = start_daemon(
        config=config, argv=lambda config: [sys.executable, "-c", PATIENT_FLUSH, str(config)])
    daemon.connect().close()
    return daemon, Path(load_config(config).daemon.state_dir)


def test_a_status_is_answered_while_a_flush_waits_for_the_database(
    start_daemon: Any, tmp_path: Path,
) -> None:
    daemon, state_dir = start_patient(start_daemon, tmp_path)
    holder = sqlite3.connect(state_dir / "events.db", isolation_level=None, timeout=30.0)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held until the rollback
        with Client(str(daemon.socket), timeout=30.0) as client:
            pinned = client.request("profile", set="powersave")  # a profile_change to write
            time.sleep(2.5)  # two ticks: the flush of that event is waiting for the lock now
            answer = client.request("status")
            assert answer["power"]["profile"]["name"] == "powersave", answer
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with Client(str(daemon.socket), timeout=30.0) as client:
        events = client.request("events", since=0, limit=100)["events"]
    changes = [e for e in events if e["kind"] == "profile_change"]
    assert changes and changes[-1]["profile"] == "powersave", (pinned, events)
    assert daemon.stop() == 0, daemon.log()
    assert "Traceback" not in daemon.log(), daemon.log()
    with sqlite3.connect(state_dir / "events.db") as db:  # written, not only held
        kinds = [row[0] for row in db.execute("SELECT kind FROM events ORDER BY seq")]
    assert "profile_change" in kinds, kinds


def test_events_made_while_a_flush_waits_go_out_live_and_are_all_written_after(
    start_daemon: Any, tmp_path: Path,
) -> None:
    """Events keep going to subscribers at once while their flush waits for the lock, in
    order; the ones made during the wait are held beside those it is writing, and once
    the lock is let go every one of them is in the log, numbered as they were sent."""
    daemon, state_dir = start_patient(start_daemon, tmp_path)
    live: list[dict[str, Any]] = []
    with Client(str(daemon.socket), timeout=30.0) as watcher, \
            Client(str(daemon.socket), timeout=30.0) as admin:
        watcher.request("subscribe", topics=["events"])
        holder = sqlite3.connect(state_dir / "events.db", isolation_level=None, timeout=30.0)
        try:
            holder.execute("BEGIN IMMEDIATE")
            for profile in ("powersave", None, "powersave"):  # the first flush waits by the second
                admin.request("profile", set=profile)
                live.append(next(m for m in watcher.messages() if m["kind"] == "profile_change"))
                time.sleep(1.5)
            assert admin.request("status")["power"]["profile"]["name"] == "powersave"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        seqs = [event["seq"] for event in live]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3, live
        deadline = time.monotonic() + 30.0
        while True:  # the waiting flush and the next one write them
            logged = admin.request("events", since=seqs[0] - 1, limit=100)["events"]
            changes = [e for e in logged if e["kind"] == "profile_change"]
            if len(changes) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert changes == live, (changes, live)
    assert daemon.stop() == 0, daemon.log()
    with sqlite3.connect(state_dir / "events.db") as db:
        written = [row[0] for row in db.execute(
            "SELECT seq FROM events WHERE kind = 'profile_change' AND seq >= ? ORDER BY seq",
            (seqs[0],))]
    assert written == seqs, (written, seqs)
