"""The persistent event log: every event gets a sequence number and survives restarts.

SQLite in WAL mode in `daemon.state_dir`. Appends are held in memory and written in
one transaction per flush (the daemon flushes about once a second and at exit), so a
busy scene costs a few flash writes per second, not one per event. Readers see held
events too, so `events since` never misses one. The log is bounded by count and age;
pruning happens on flush.

`seq` comes from an AUTOINCREMENT key: it never goes back, not even after pruning or
a restart, which is what lets a client resume with "everything after the last seq I saw".
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from typing import Any

log = logging.getLogger("wattgate.eventlog")

Event = dict[str, Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
)
"""


class EventLog:
    def __init__(self, path: str, max_events: int = 100_000, max_age_s: float = 30 * 86400) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.max_events = max_events
        self.max_age_s = max_age_s
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Appends and the odd `events since` read need few pages; SQLite's default 2 MB
        # cache would only be memory the daemon grows into over its first hours.
        self._db.execute("PRAGMA cache_size=-256")
        self._db.execute(SCHEMA)
        self._next_seq = self._read_next_seq()
        self._held: list[Event] = []

    def _read_next_seq(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) + 1 if row else 1

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def append(self, kind: str, ts: float, **fields: Any) -> Event:
        """Give the event its seq and hold it for the next flush; returns the full event."""
        event: Event = {"class": "event", "seq": self._next_seq, "ts": ts, "kind": kind, **fields}
        self._next_seq += 1
        self._held.append(event)
        return event

    def flush(self, now: float) -> int:
        """Write held events in one transaction and prune; returns how many were written."""
        held, self._held = self._held, []
        with self._transaction():
            if held:
                self._db.executemany(
                    "INSERT INTO events (seq, ts, kind, body) VALUES (?, ?, ?, ?)",
                    [(e["seq"], e["ts"], e["kind"], _body(e)) for e in held],
                )
            self._db.execute("DELETE FROM events WHERE ts < ?", (now - self.max_age_s,))
            self._db.execute(
                "DELETE FROM events WHERE seq <= ?", (self.last_seq - self.max_events,)
            )
        return len(held)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def since(self, seq: int, limit: int) -> list[Event]:
        """Events with a seq above `seq`, oldest first, at most `limit`."""
        rows = self._db.execute(
            "SELECT seq, ts, kind, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall()
        events = [_event(*row) for row in rows]
        if len(events) < limit:
            events.extend(e for e in self._held if e["seq"] > seq)
        return events[:limit]

    def oldest_seq(self) -> int:
        row = self._db.execute("SELECT MIN(seq) FROM events").fetchone()
        if row and row[0] is not None:
            return int(row[0])
        return self._held[0]["seq"] if self._held else self._next_seq

    def close(self, now: float) -> None:
        self.flush(now)
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _body(event: Event) -> str:
    extra = {k: v for k, v in event.items() if k not in ("class", "seq", "ts", "kind")}
    return json.dumps(extra, separators=(",", ":"))


def _event(seq: int, ts: float, kind: str, body: str) -> Event:
    return {"class": "event", "seq": seq, "ts": ts, "kind": kind, **json.loads(body)}
