"""A burst of more events within one flush than the log keeps is the bound at work.

Held events past `max_events` are dropped, oldest first, as the prune of the next flush
would remove them. With every write working, that was logged as a write failure:
"dropping the oldest held events until writing works again", then "held event(s)
written, N dropped". Real SQLite files; the log lines are the ones the daemon writes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wattgate.daemon.eventlog import EventLog


def test_a_burst_past_the_bound_is_not_called_a_write_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = EventLog(str(tmp_path / "events.db"), max_events=100)
    caplog.set_level(logging.DEBUG, logger="wattgate.eventlog")
    try:
        seqs = [log.append("detection", float(i))["seq"] for i in range(200)]
        assert log.flush(200.0) is True
        assert [e["seq"] for e in log.since(0, 1000)] == seqs[100:]
        assert log.oldest_seq() == seqs[100]
    finally:
        log.close(201.0)
    lines = [r.getMessage() for r in caplog.records]
    assert not any("until writing works again" in line for line in lines), lines
    assert not any(r.levelno >= logging.WARNING for r in caplog.records), lines
