"""A flush that writes events ends with them on disk; one with nothing to write syncs nothing.

The log promises that a power cut loses at most about the last second of events (the
daemon flushes about once a second). Flushes committed in WAL mode with
synchronous=NORMAL, which syncs only at a checkpoint: the events of an ordinary flush
sat in the page cache for the kernel's writeback delay (about 30 s), and a power cut
lost them all. An idle daemon must not sync either: each sync is a flash write.

SQLite syncs from C, where a Python monkeypatch of os.fsync sees nothing, so the child
process is run under strace and its fsync and fdatasync calls are counted between
markers it writes to stdout.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = r"""
import os, sys
from wattgate.daemon.eventlog import EventLog

def mark(text):
    os.write(1, ("MARK " + text + "\n").encode())

log = EventLog(sys.argv[1])
log.append("detection", 1.0, note="warm-up")
assert log.flush(1.0)  # the first flush also looks for events to age out
mark("events")
log.append("motion_start", 2.0)
log.append("motion_end", 2.5)
assert log.flush(2.0)
mark("nothing")
assert log.flush(3.0)
mark("end")
os._exit(0)
"""

SYNC = re.compile(r"\b(fsync|fdatasync)\(")
MARK = re.compile(r'write\(1, "MARK (\w+)')


def _syncs_between_marks(trace: str) -> dict[str, int]:
    """How many fsync/fdatasync calls follow each marker, up to the next one."""
    counts: dict[str, int] = {}
    current = None
    for line in trace.splitlines():
        if (found := MARK.search(line)) is not None:
            current = found.group(1)
            counts[current] = 0
        elif current is not None and SYNC.search(line) and "= 0" in line:
            counts[current] += 1
    return counts


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_flush_that_writes_events_syncs_once_and_an_idle_one_never(tmp_path: Path) -> None:
    trace = tmp_path / "strace.txt"
    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,write", "-o", str(trace),
         sys.executable, "-c", CHILD, str(tmp_path / "events.db")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    counts = _syncs_between_marks(trace.read_text())
    assert set(counts) == {"events", "nothing", "end"}, counts
    assert counts["events"] == 1, counts  # the WAL, once, at the commit
    assert counts["nothing"] == 0, counts
