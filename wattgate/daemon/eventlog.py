"""The persistent event log: every event gets a sequence number and survives restarts.

SQLite in WAL mode in `daemon.state_dir`. Appends are held in memory and written in
one transaction per flush (the daemon flushes about once a second and at exit), so a
busy scene costs a few flash writes per second, not one per event. A flush that writes
events syncs them (one sync of the -wal: `_Transaction`), so a power cut loses at most
the events of the last second; a flush with nothing to write syncs nothing. Readers see held
events too, so `events since` never misses one. The log is bounded by count, age and
bytes; pruning happens on flush, and only ever removes the oldest events, so the log never
has a hole inside it. A flush with nothing to write looks for events to age out once every
PRUNE_EVERY_S, so an idle daemon does not touch the database every second, and no flush
scans the whole table. The
`-wal` file beside the database stays near WAL_MAX_BYTES (plus what one flush writes): it
is checkpointed once it holds that much and cut back to it after, and also after a write
that finds no room for it to grow (a full disk), which is then tried again: the WAL starts
again from its beginning and needs no new block.

`max_bytes` bounds the events' bytes (ROW_BYTES_SQL: each one's kind and JSON body and a
little for the rest of its row), not the file: SQLite never makes a database file smaller
when rows are deleted; their pages go on its free list and the next inserts reuse them
(https://sqlite.org/fileformat2.html#the_freelist). Only VACUUM would give them back, by
rewriting the whole file, the wear the bound is there to spare. A flush prunes before it
writes, so it reuses the pages it frees, and `events.db` stays within about `max_bytes`
plus page slack (the part-filled last page of a large event, b-tree pages not full), its
`-wal` within WAL_MAX_BYTES plus one flush. The bytes are a running total, summed once at
open, added to on each write and less what a prune deletes: a flush reads only the
events that go. Events held while writes fail are bounded by `max_bytes` too, as the
memory they take (`_held_memory`: the event, the values in it and the text it is stored
as), so the daemon grows by at most about `max_bytes` however long the failure lasts.
That is several times their stored text: with the default 16 MiB, some 16 000
detections are held, not `max_events`.

Age is judged by two clocks, and an event goes only when both say it is older than
`max_age_s`: its `ts` (the wall clock) against the flush's `now`, and, for an event logged
since the board booted, the time since boot when it was logged (CLOCK_BOOTTIME: nobody sets
it, and it counts suspend), kept with it in `boot_s`; the `boot` table names the boot and
its first seq. The wall clock alone is not to be trusted: a board without a real-time clock
boots at 1970 and NTP sets the clock minutes later, which made the events of those minutes
55 years old (or an admin sets the date back, which makes new events look older than the
ones before them). A clock set either way therefore never ages out an event of this boot
early; it can only keep events longer, within `max_events` and `max_bytes`. Events of an
earlier boot have only their stamps: they go up to the first one that is recent, so ones
stamped 1970 among newer ones go with the older ones.

`seq` never goes back and a number is never given to two events, not after pruning, a
restart or an unclean exit (SIGKILL, the watchdog's abort, a power cut). An event is
sent to subscribers as soon as it has its number, up to a second before it is written,
so the numbers come from blocks reserved in the database ahead of use: the
`seq_reserved` table holds the highest number that may have been given out. A new
block is reserved (synced to disk) before the held numbers reach the old one, on open
and then on the flush that finds less than half a block left (or by an append that
finds none left, in `.seq` alone: see the last paragraph), so it costs one write per
`SEQ_BLOCK // 2` events. Opening the log continues after the reservation: after an
unclean exit the numbers of the events that were lost, and the rest of the block, are
skipped, never used again. A clean close gives the unused part of the block back, so
a clean restart leaves no gap. (A reservation that cannot be written, the database and
its copy both failing to write, does not stop the numbering: live events are the daemon's
purpose. Numbers past the last reservation written are then known only in memory, and a
restart before a reservation is written again gives them once more, as nothing on the
storage could record them: docs/protocol.md says so. Lost or damaged files are another
matter: numbering goes on after the highest number any of them still holds, below.)
Each reservation is also copied to `<path>.seq` (synced,
before the database has it): a power cut on flash can leave the database garbage, cut
short or empty, and the numbering must go on past it all the same. A database found damaged
when it is opened (any page of it, free ones too: PRAGMA quick_check; or a seq written or
reserved in it that is too high to number on from, `_read_seq`) is moved to
`<path>.damaged` (kept for a post-mortem; only the newest; beside the target of a path that
is a symbolic link, which stays) and a new one is started, logged
as an error: the daemon goes on serving. The new one starts with `last_seq` at the copy of
the reservation, or at the highest seq still readable in the damaged file (written,
reserved, or an event's: `_salvage_seq`) when that is higher or the copy is unreadable
or gone too, so `oldest_seq` is above every number the old one gave out: its events are
lost, as if pruned. Damage found while the daemon runs (SQLITE_CORRUPT or
SQLITE_NOTADB on a write, a reservation or an `events` read: flash that lost a page under
it) is set aside the same way then, not at the next start (`_recover`): the events written
to the damaged file are lost and answered as pruned ones are, the held events (the ones
being written when the damage was met among them) go to the new log, and numbering goes
on from memory. Storage that damages each new file too is met again at the next flush and
set aside again, the held events kept each time: a streak of it (set-asides with no write
between them that met no damage) is logged as one error, its later set-asides at DEBUG and
briefly at the 10th, 100th..., and the first write that meets no damage says how many times
the log was set aside. A damaged file that cannot be moved aside (a read-only directory)
fails writes as below, one warning per streak, and `events` reads with an error; each of
them tries only the move again, not an open and check of every page of the damaged file,
and once the move works the held events go to the new log.

A flush that cannot write (the database locked by another process, a full disk, a
read-only directory) keeps the held events for the next flush, waits at most
`BUSY_TIMEOUT_MS` for a lock, and logs one warning per failure streak and one line when
writing works again. While writes fail, at most `max_events` events and `max_bytes` of
memory (see above) are held; beyond that the oldest held ones are dropped (and logged),
and the written events before them are no longer served (`oldest_seq` is above them): a
hole inside the log would look like numbers never given out. A burst of more events
within one flush while writes work is bound as the prune after the write would bound it
(by their stored bytes: they are held until that flush only), and said only at DEBUG.
On a disk that is already full at open, SQLite cannot size the -shm file a WAL database is
read through; the log is then opened with its index in memory (locking_mode=EXCLUSIVE,
logged): the daemon starts, serves the events it has and holds new ones as above. Where no
database can be opened at all on a full disk (the one there was damaged and set aside, or
cut to 0 bytes, or deleted: a new one needs room), the log opens without one, logged: it
holds new events as above, numbered after the copy of the reservation, `events` reads
fail, and the first flush that can open a new database writes them there
(`_open_database`).

An event that JSON or the table cannot hold as it is (a lone surrogate from a path read
with surrogateescape, nesting deeper than the encoder goes, an object that is not JSON, a
time that is not a finite number) is changed as little as it takes when it is appended,
and logged once per kind: it is sent live and written as changed. Left as it was, it
would fail every flush and hold back every event after it.

An event is also bounded when it is appended, so each costs at most about 60 KiB of
flash: a driver's or GStreamer's error text (`camera_lost.reason`, an error's message)
has no bounded length. A text field over TEXT_MAX characters keeps its head, which says
what failed, and is named in `truncated`; an event still over EVENT_MAX_LINE bytes as a
line has its largest fields left out and named in `omitted`, the hub's cut (fit_message).
EVENT_MAX_LINE is 4 KiB under the protocol's line, so the event fits an `events` answer
whole beside the answer's own fields: what a client reads after a restart is the event it
was sent live, not a second cut of it. Nothing is logged for a cut: it is the driver's
text, not a bug, and the event itself says what was cut.

The log's place is checked when it is opened, so a bad one stops the start with a line
naming the path and what is wrong with it (LogFileError, an OSError): the directory must be
one, or be made, and be writable (SQLite makes and deletes -wal and -shm there); each of
SQLite's files (the database, -wal, -shm, -journal) that is there must be a regular file
this process may write; `.lock` and `.seq` must be regular files. A database that is a
symbolic link has its -wal and -shm beside its target (SQLite resolves the link), so the
target's directory must be there and writable too. Any of these files that is a symbolic
link must resolve (no loop), and one whose target is not there yet (it is made where the
link points) must point into a directory that is there and writable: a link into a
directory that is gone, such as `.lock` left pointing at a moved data partition, is named
with its target. Left to SQLite and os.open, these said "disk I/O error", "unable to open
database file" or "No such file or directory", naming no file or only the link, or let the
log open and fail every flush (or open with no lock). A `.seq` this process may not write
(mode 0444, left by root) is replaced by a file of its own, renamed over it: the directory
is writable.

One process uses a log at a time: two daemons given one `daemon.state_dir` would number
events from the same reservation, give numbers twice, and lower each other's reservation
when one closes. An EventLog holds an exclusive flock on `<path>.lock` while it is open,
and, when the path is a symbolic link, on `.lock` beside the file it links to as well
(the database SQLite opens: a daemon whose state_dir holds that file locks it there);
a second one is refused (OSError EBUSY, naming the holder's pid), also when it may not
open the lock file; one it may not open that nobody holds is named with its owner and
mode (LogFileError). The kernel drops the lock when its holder dies, so a crash never
leaves it held.

The daemon flushes on a thread of its own, and appends and reads on its event loop: a
flush waits for a sync of the -wal (on an SD card or eMMC under writeback, up to a second
or more) or for another process's lock, and on the loop that wait held every client's
requests and results. So a flush holds the lock on the log's state (in memory) only to
take the events it is to write and, after the commit, to stop holding the ones written;
the write, the sync and any wait for a lock are under a lock of their own, one flush at a
time. An append made meanwhile is held for the next flush (and dropped past the bounds as
above: one the write was already writing is written all the same, and not served). An
append never uses the database: a block it must reserve (more than half a block given out
since the last flush, which a slow flush makes likelier) is written to `.seq` alone,
synced, and the next flush records it in the database too; that sync of a 21-byte file is
all an append can wait for, and a flush's own `.seq` write, which it then waits behind, is
as short. An `events` read (`since`, `oldest_seq`) made during a flush reads on a second,
read-only connection (SQLite runs the calls on one connection one at a time; in WAL mode a
reader never waits for a writer), and then the held events after the last row it read: a
commit between its queries puts events both in the table and among the held ones, and
each is served once, in order. Where there is no such reader (the database opened with its
index in memory, or none open) or it fails (damage), the read waits for the flush and is
made on its connection, where damage is set aside as above.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import logging
import math
import numbers
import os
import sqlite3
import stat
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NamedTuple, Optional, TypeVar, cast

from wattgate.daemon.boot import boot_id
from wattgate.daemon.hub import KEPT_FIELDS, MAX_LINE, fit_message, json_text
from wattgate.daemon.pathcheck import (
    PathError,
    expect,
    expect_link_directory,
    expect_writable,
    hand_to_directory_owner,
    nearest_existing,
    whose,
)
from wattgate.daemon.pidlock import LockHeld, lock_file
from wattgate.daemon.rollback import fsync_dir

log = logging.getLogger("wattgate.eventlog")

Event = dict[str, Any]
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    boot_s REAL
);
CREATE TABLE IF NOT EXISTS boot (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    boot_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seq_reserved (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    upto INTEGER NOT NULL
);
"""

# The highest seq there can be: what `events since` takes (commands.py). A thousand events
# a second would reach it in 146 million years.
SEQ_MAX = 2**62
# Seq numbers reserved per write: after an unclean exit at most this many are skipped.
SEQ_BLOCK = 1000
# How long a write waits for another process's lock: a flush holds back the next one,
# and the daemon's exit, which must not stall for SQLite's default 5 s. Opening the log
# keeps that default.
BUSY_TIMEOUT_MS = 100
PRUNE_EVERY_S = 60.0  # how often a flush with nothing to write looks for aged events
# The WAL is checkpointed into the database once it holds this much, and cut back to it
# after: SQLite's defaults (a checkpoint at 1000 pages, a WAL never made smaller) leave a
# 4 MB -wal file for good on a state partition that may be a few MB in all.
WAL_MAX_BYTES = 1 << 20

# Beside the database: a copy of the reservation (so the numbering survives the loss of
# the database), and where a damaged database is moved.
FLOOR_SUFFIX = ".seq"
DAMAGED_SUFFIX = ".damaged"
# SQLite's primary result codes for a file that is not a sound database.
_SQLITE_DAMAGED = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_SQLITE_FULL = 13
_SQLITE_IOERR_SHMSIZE = 10 | (19 << 8)
_SQLITE_IOERR_WRITE = 10 | (3 << 8)

# What a failed write raises: a lock held too long, a full disk, a read-only file.
_WRITE_ERRORS = (sqlite3.DatabaseError, OSError)

# The bound on an event (see the module docstring): a text field keeps this many characters,
# and the event as a line at most EVENT_MAX_LINE bytes, 4 KiB under the protocol's line, so
# an `events` answer has room for it whole beside its own fields and an id of nearly 4 KiB.
TEXT_MAX = 4096
EVENT_MAX_LINE = MAX_LINE - 4096
ELLIPSIS = "…"  # ends a text that was cut

# An event's bytes, what `max_bytes` counts: its kind and body as stored (UTF-8) and
# ROW_BYTES for the rest of its row, its seq, ts and boot_s and SQLite's record and cell
# headers (https://sqlite.org/fileformat2.html#record_format). As SQL and as Python.
ROW_BYTES = 32
ROW_BYTES_SQL = (
    f"COALESCE(length(CAST(kind AS BLOB)) + length(CAST(body AS BLOB)), 0) + {ROW_BYTES}"
)


def _row_bytes(kind: str, body: str) -> int:
    return len(kind.encode()) + len(body.encode()) + ROW_BYTES


class _Held(NamedTuple):
    """An event given out and not yet written: with the boot clock when it was logged, its
    body as it will be stored, its bytes (`_row_bytes`) and what it takes in memory
    (`_held_memory`)."""

    event: Event
    boot_s: float
    body: str
    size: int
    memory: int


# What holding any event takes besides the event and its body: the _Held tuple, its
# boot_s, size and memory, and its slot in the deque (a pointer; blocks of 64 of them).
_HELD_OVERHEAD = (sys.getsizeof(_Held({}, 0.0, "", 0, 0)) + sys.getsizeof(0.0)
                  + 2 * sys.getsizeof(1 << 20) + 8)


def _held_memory(event: Event, body: str) -> int:
    """The bytes holding event (stored as body) keeps in memory, by sys.getsizeof: the
    event's dict and each value in it, nested ones too, the body and _HELD_OVERHEAD.

    Counting only the stored text, held events took about 6 times `max_bytes`: a small
    detection is ~110 bytes as text and ~700 in memory, and a long text is held twice.
    An object is counted once however often the event holds it. One the event shares
    with other events (its kind, a label) is counted with each of them, so this errs
    high; the names of the event's own fields are not counted: they are the names in the
    code that logs it, one copy for all its events."""
    total = _HELD_OVERHEAD + sys.getsizeof(body) + sys.getsizeof(event)
    pending: list[Any] = list(event.values())
    counted: set[int] = set()
    while pending:  # not recursive: a value may nest as deep as JSON goes
        item = pending.pop()
        if id(item) in counted:
            continue
        counted.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return total


def boot_clock() -> float:
    """Seconds since boot, suspend included: the clock an event's age is checked against
    (see the module docstring), as nobody can set it."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


Method = TypeVar("Method", bound=Callable[..., Any])


def _locked(method: Method) -> Method:
    """A public method of EventLog, run holding the lock on its state (the module
    docstring), never the flush's lock: it does not touch the database."""

    @wraps(method)
    def run(log_: EventLog, *args: Any, **kwargs: Any) -> Any:
        with log_._lock:
            return method(log_, *args, **kwargs)

    return cast(Method, run)


class EventLog:
    def __init__(
        self,
        path: str,
        max_events: int = 100_000,
        max_age_s: float = 30 * 86400,
        max_bytes: int = 16 << 20,
        seq_block: int = SEQ_BLOCK,
        clock: Callable[[], float] = boot_clock,
    ) -> None:
        """`clock`: seconds since boot (tests pass one that can jump 30 days).

        LogFileError (an OSError) when the directory or a file of the log is there but
        cannot be one (see `check_place`)."""
        check_place(path)
        self.path = path
        self._clock = clock
        # See the module docstring: the lock on the state in memory (held for no write and
        # no sync of the database), the one a flush holds while it writes (taken before the
        # state's lock, never while holding it), and the one on writing `.seq`.
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._floor_lock = threading.Lock()
        self._floor_saved = 0  # the highest reservation written to `.seq` by this log
        # A second connection, read-only, for `events` reads during a flush (`_reader`):
        # SQLite runs the calls on one connection one at a time. `_generation` counts the
        # writer's connections, so a reader of a file set aside is not used.
        self._reader_db: Optional[sqlite3.Connection] = None
        self._reader_generation = self._generation = 0
        self._exclusive = False
        # Before reading: another log's numbers are not ours. Beside the path (its .seq is
        # there), and beside the file SQLite opens when the path is a link to it: a daemon
        # whose state_dir holds that file locks it there, and without this second lock both
        # opened the one database and gave each number twice.
        self._lock_fds = [_lock(path + ".lock")]
        try:
            database = _database_file(path)
            if database != path:
                self._lock_fds.append(_lock(database + ".lock", (
                    f"one daemon per event log, and {path} is a symbolic link to {database}; "
                    "stop the other daemon or give each state_dir an events.db of its own")))
            self._open(max_events, max_age_s, max_bytes, seq_block)
        except BaseException:
            self._release_lock()
            raise

    def _open(self, max_events: int, max_age_s: float, max_bytes: int, seq_block: int) -> None:
        self.max_events = max_events
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.seq_block = max(2, seq_block)
        # Damage found mid-run (`_recover`), or no database at start (`_open_database`):
        # whether the connection is closed and a new database is still to be opened, and
        # the last seq the new one is still to record; the damage found in a file that
        # could not be moved aside yet (`_set_aside_found`); how often the log was set
        # aside since a write last worked on a database that no damage was met in (the
        # streak, logged in full once: `_damage_streak_ended`).
        self._reopen_due = False
        self._lost_upto: Optional[int] = None
        self._damage_found: Optional[sqlite3.DatabaseError] = None
        self._set_asides = 0
        # What numbering goes on after when the database is lost: the copy of the
        # reservation, and what is still readable in a damaged database (`_salvage_seq`).
        self._floor_at_open = self._read_floor()
        self._salvaged = 0
        unopened = self._open_database()
        # A new database: set aside above, or one SQLite began where events.db was cut to
        # 0 bytes (a power cut) or deleted, with nothing to set aside.
        if unopened is None and not self._read_written_seq() and not self._read_reserved():
            self._continue_after_lost()
        self._pruned_at: Optional[float] = None  # `now` of the last flush that pruned by age
        # Events given out and not yet written, their bytes and their memory (`_Held`).
        self._held: collections.deque[_Held] = collections.deque()
        self._held_bytes = 0
        self._held_memory = 0
        # Write trouble: when the current failure streak started, how many writes failed,
        # how many held events were dropped; whether `append` may try to reserve. And how
        # many were dropped with no write failing: the bound on a burst (`_drop_oldest`).
        self._failing_since: Optional[float] = None
        self._failures = 0
        self._dropped = 0
        self._burst_dropped = 0
        # The oldest seq served: the written events below a held one that was dropped go
        # with it (pruned on the next write), or they would be a hole `oldest_seq` hides.
        self._served_from = 0
        self._reserve_in_append = True
        self._changed_kinds: set[str] = set()  # kinds whose events had to be changed
        self._unreadable: set[int] = set()  # seqs of rows found damaged (logged once each)
        if unopened is None:
            written = self._read_written_seq()
            reserved = self._read_reserved()
            row = self._db.execute("SELECT boot_id, first_seq FROM boot WHERE id = 0").fetchone()
        else:
            # No database yet: a new one is opened by the first write there is room for
            # (`_reopen`), and records the numbers given out before it (`_record_lost`).
            written = reserved = 0
            row = None
            self._rows = self._stored = 0
            self._reopen_due = True
        # The newest number given out (written, pruned or lost in a crash) that the log
        # knows of; the next event gets the one after the reservation, or after the copy
        # of it kept beside the database when that is higher (the database was lost).
        self._last_seq = written
        self._reserved = max(written, reserved, self._carried_seq())
        # The reservation the database holds: one `append` made is in `.seq` alone until
        # the next flush records it there too.
        self._db_reserved = reserved
        self._next_seq = self._reserved + 1
        if unopened is not None:
            self._lost_upto = self._last_seq = self._reserved
        # This boot's events start at _boot_first: the ones the boot clock can judge. The
        # `boot` row is written with the first of them (None: it is already there).
        self._boot_id = boot_id()  # None: every open is a new boot
        if row is not None and self._boot_id is not None and row[0] == self._boot_id:
            self._boot_first, self._boot_row = int(row[1]), None
        else:
            self._boot_first = self._next_seq
            self._boot_row = None if self._boot_id is None else (self._boot_id, self._next_seq)
        try:
            if unopened is None:
                self._reserve(self._next_seq - 1 + self.seq_block)
            else:  # numbers are given out all the same: the copy must be ahead of them
                self._save_floor(self._next_seq - 1 + self.seq_block)
                self._reserved = self._next_seq - 1 + self.seq_block
                self._db_reserved = 0
        except _WRITE_ERRORS as exc:
            self._failed(exc)
        if unopened is None:
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        elif self._failing_since is None:  # a failure streak, logged by `_unopened`
            self._failing_since = time.monotonic()
            self._failures = 1

    def _open_database(self) -> Optional[sqlite3.DatabaseError]:
        """Open the database at start: a damaged one is set aside and a new one begun, and
        on a full disk it is opened with its index in memory (`_connect_or_alone`).
        Returns None when a database is open; the error, logged, when the disk is too
        full for any (a new one cannot be made, nor the damaged one's place taken).

        Each of these alone was handled; together they stopped the start (the daemon
        exited 69, and did again at each restart): the check of every page that the
        full-disk open runs met damage nothing caught, and the database begun in place of
        a damaged, empty or missing one could not be made on the full disk. Without one
        the log holds its events, as it does while a write fails, and the first flush
        with room opens a new one. A damaged file that cannot be moved aside yet
        (`_set_aside_found`) is moved by that flush too."""
        try:
            try:
                self._connect_or_alone()
                return None
            except sqlite3.DatabaseError as exc:
                if _damaged(exc):
                    damage = exc
                    self._salvaged = self._salvage_seq()
                elif _full(exc):
                    return self._unopened(exc)
                else:
                    raise  # locked, read-only, cannot open: the daemon says so and exits
            try:
                named = self._move_aside()
            except OSError as failed:
                self._damage_found = damage
                return self._unopened(
                    damage, f"; it is damaged and cannot be moved aside ({failed})")
            try:
                self._connect_or_alone()
            except sqlite3.DatabaseError as exc:
                if not _full(exc):
                    raise
                self._set_aside(named, damage, started=False)
                return self._unopened(exc)
            self._set_aside(named, damage, started=True)
            return None
        except BaseException:
            with contextlib.suppress(sqlite3.Error, AttributeError):
                self._db.close()
            raise

    def _unopened(self, exc: sqlite3.DatabaseError, why: str = "") -> sqlite3.DatabaseError:
        """Close what `_connect` left open and log that the log has no database yet."""
        with contextlib.suppress(sqlite3.Error, AttributeError):
            self._db.close()
        log.warning(
            "event log %s cannot be opened (%s)%s; new events are held in memory, and the "
            "log is opened by the first flush that can", self.path, exc, why,
        )
        return exc

    def _connect_or_alone(self) -> None:
        """`_connect`, or on a full disk `_connect_alone`."""
        try:
            self._connect()
        except sqlite3.DatabaseError as exc:
            if not _full(exc):
                raise
            self._connect_alone(exc)

    def _connect(self, exclusive: bool = False) -> None:
        """Open the database and read what opening needs; a damaged file raises here.

        `exclusive`: SQLite's locking_mode=EXCLUSIVE, which keeps the WAL's index in this
        process's memory instead of the -shm file, and other processes out."""
        _make_database_file(self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._generation += 1
        self._exclusive = exclusive
        if exclusive:
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Appends and the odd `events since` read need few pages; SQLite's default 2 MB
        # cache would only be memory the daemon grows into over its first hours.
        self._db.execute("PRAGMA cache_size=-256")
        page = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        self._db.execute(f"PRAGMA wal_autocheckpoint={max(1, WAL_MAX_BYTES // page)}")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_MAX_BYTES}")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
        if "boot_s" not in columns:  # a log from before boot_s: its events are stamps only
            self._db.execute("ALTER TABLE events ADD COLUMN boot_s REAL")
        # Every page of the file, the free ones too, is checked here, not mid-run: a
        # damaged page that opening did not read (a free page, the seq_reserved table)
        # stopped the daemon's start, or failed every write for good.
        found = str(self._db.execute("PRAGMA quick_check(1)").fetchone()[0])
        if found != "ok":
            raise _DamagedError(found.splitlines()[-1])
        # Sound pages can hold a damaged number (SQLite keeps no checksum of a row): it is
        # found here, so that the file is set aside as one that fails the check is.
        self._read_written_seq()
        self._read_reserved()
        # The one read of every event, once per open: flushes keep both up to date.
        self._rows, self._stored = self._tally(SEQ_MAX + 1)

    def _set_aside(self, named: str, exc: sqlite3.DatabaseError, started: bool) -> None:
        """Log that the damaged database, moved to `<path>.damaged` (`_move_aside`, which
        returned `named`), was replaced by a new one (`started`), or is to be when there
        is room for it.

        A power cut on flash can leave the file garbage or cut short; refusing to start
        would stop the whole daemon for its log. The file is kept (only the newest damaged
        one) for a post-mortem; the numbering goes on past the copy of the reservation and
        what the damaged file still holds (`_carried_seq`).

        A path that is a symbolic link (events.db kept on a data partition) has the file
        and its -wal beside the link's target, where SQLite keeps them: renaming the link
        lost it, and the new log was begun as a file beside the link, on the wrong file
        system for good. The link stays, and .seq and .lock beside it (and the second
        .lock beside the target).

        The WAL's pages belong to the copy, for the post-mortem: closing the connection
        that found the damage checkpoints them into the damaged file and deletes the -wal,
        as SQLite's close does; where it cannot (another process reading the file holds
        its SHARED lock) the -wal (and a -journal) is left, and is moved with the file
        here. Its -shm indexes only the WAL beside it and is deleted. (SQLite itself
        discards a -wal beside a database of 0 pages, as the new one is: pager.c,
        pagerOpenWalIfPresent; tests/test_eventlog_paths.py.)"""
        log.error(
            "event log %s is damaged (%s): moved to %s and %s; the events "
            "in it are no longer served, and numbering goes on after seq %d. Keep the file "
            "for a post-mortem or delete it; check the storage if this happens again",
            named, exc, _database_file(self.path) + DAMAGED_SUFFIX,
            "a new log started" if started else "a new log is to be started when there is "
            "room for it", self._carried_seq(),
        )

    def _carried_seq(self) -> int:
        """The highest number the log knows was given out or reserved before it was opened,
        besides a sound database's own: the copy in `.seq`, or what a damaged database
        still held (`_salvage_seq`), whichever is higher."""
        return max(self._floor_at_open, self._salvaged)

    def _salvage_seq(self) -> int:
        """The highest seq still readable in the database just found damaged, before it is
        set aside: the highest written (sqlite_sequence), the reservation and the newest
        event, each read on its own, one that fails or is not a seq of at most
        `_seq_limit` left out; 0 when none is readable.

        Numbering went on from `.seq` alone: when that copy was unreadable too (damaged,
        or lost with the database), it began again at 1 and gave every number once more,
        though the damaged file often still said how far it had gone (damage in one page,
        or in one of its two numbers)."""
        found = 0
        for read in (self._read_written_seq, self._read_reserved, self._read_newest_event):
            with contextlib.suppress(sqlite3.Error, AttributeError):  # _DamagedError too
                found = max(found, read())
        return found

    def _move_aside(self) -> str:
        """Close the database and move it and its WAL to `<path>.damaged` (see
        `_set_aside`); returns the path as a log line names it. The reader is closed
        first, so that the writer's close is the file's last, the one that checkpoints."""
        with self._lock:
            self._close_reader()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        database = _database_file(self.path)
        aside = database + DAMAGED_SUFFIX
        for stale in (aside, aside + "-wal", aside + "-shm", aside + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        os.replace(database, aside)
        for suffix in ("-wal", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(database + suffix, aside + suffix)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(database + "-shm")
        return self.path if database == self.path else f"{self.path} (a link to {database})"

    def _continue_after_lost(self) -> None:
        """Record in a new database that the numbers up to the copy of the reservation
        were given out by the one it replaces (set aside, cut to 0 bytes or deleted): their
        events are lost, so `last_seq` is that copy and `oldest_seq` is above it, as for
        pruned events, after a restart too.

        Left at 0 and 1, a client asking `since` the last event it saw got no events and
        no sign that any were lost. The row is what SQLite keeps as the largest seq the
        table has held, and may be written (https://sqlite.org/autoinc.html)."""
        floor = self._carried_seq()
        if floor:
            # On a full disk it may not be written: the log opens all the same.
            with contextlib.suppress(*_WRITE_ERRORS):
                self._db.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (floor,)
                )

    def _connect_alone(self, exc: sqlite3.DatabaseError) -> None:
        """Open the log on a full disk, where SQLite cannot size the -shm file that a WAL
        database is read through: with its index in memory (`_connect(exclusive=True)`).

        Refusing to open would stop the whole daemon for want of room for its history;
        like a flush on a full disk, the log serves what it has and holds new events until
        there is room. Other processes (an admin's sqlite3 shell) are kept out until the
        daemon restarts."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._connect(exclusive=True)
        log.warning(
            "event log %s: the disk is full (%s): opened for the daemon alone, with no -shm "
            "file; new events are held in memory until there is room, and other programs "
            "cannot read the log until the daemon restarts", self.path, exc,
        )

    def _read_floor(self) -> int:
        """The copy of the reservation kept beside the database; 0 when there is none.

        A number above `_seq_limit` is damage (one flipped bit in its first digit makes
        1e19), not a reservation: taken, it would not fit SQLite's integers and the log would
        not open, or would number events past what `events since` can ask for."""
        try:
            with open(self.path + FLOOR_SUFFIX, encoding="ascii") as f:
                floor = max(0, int(f.read().strip()))
            if floor > self._seq_limit():
                raise ValueError(f"{floor} is above {self._seq_limit()}")
            return floor
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("event log %s: %s%s unreadable (%s); numbering goes on from the "
                        "database alone", self.path, self.path, FLOOR_SUFFIX, exc)
            return 0

    def _save_floor(self, upto: int, lower: bool = False) -> None:
        """Keep `upto` beside the database, synced, so a database lost to damage never lets
        a number be given twice. Only ever made higher, unless `lower` (the block given
        back at close): a flush and an `append` may each reserve, and the one with the
        lower number may come second.

        Overwritten in place, always the same 21 bytes in one sector: no new block is
        needed, so it works on a full disk as long as SQLite can (a temp file and a rename
        would need one, and cost two more syncs per reservation). A copy this process may
        not open for writing (mode 0444, or left by root) is replaced instead, once, by a
        new file of its own renamed over it (`_replace_floor`): written in place it failed
        every flush that reserved numbers, for good."""
        with self._floor_lock:
            if upto <= self._floor_saved and not lower:
                return
            self._write_floor(upto)
            self._floor_saved = upto

    def _write_floor(self, upto: int) -> None:
        final = self.path + FLOOR_SUFFIX
        created = not os.path.exists(final)
        try:
            fd = os.open(final, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:
            _replace_floor(final, upto)
            return
        try:
            hand_to_directory_owner(fd, final)
            os.pwrite(fd, _floor_text(upto), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(Path(final).parent)

    def _release_lock(self) -> None:
        """Let another EventLog open the file (what the kernel does when the holder dies)."""
        fds, self._lock_fds = self._lock_fds, []
        for fd in fds:
            if fd is not None:
                os.close(fd)

    def _read_written_seq(self) -> int:
        return self._read_seq("SELECT seq FROM sqlite_sequence WHERE name = 'events'",
                              "the highest seq written (sqlite_sequence)")

    def _read_reserved(self) -> int:
        return self._read_seq("SELECT upto FROM seq_reserved WHERE id = 0",
                              "the reservation (seq_reserved)")

    def _read_newest_event(self) -> int:
        # the newest within range: one event numbered out of it does not hide the others
        return self._read_seq("SELECT MAX(seq) FROM events WHERE seq BETWEEN 0 AND ?",
                              "the newest event's seq", (self._seq_limit(),))

    def _read_seq(self, query: str, what: str, args: tuple[int, ...] = ()) -> int:
        """The seq `query` reads from the database, 0 when it has none; _DamagedError when
        it is not one the log can number on from: not an integer, or above `_seq_limit`.

        The copy in `.seq` is checked so (`_read_floor`), and these two were not: near
        2**63 the block reserved at open did not fit SQLite's integers (OverflowError: the
        daemon exited at every start, and systemd started it into the same crash again),
        and above SEQ_MAX events were numbered past what `events since` takes. Damaged,
        the file is set aside, and numbering goes on past the copy and the other numbers
        still readable in it (`_salvage_seq`)."""
        row = self._db.execute(query, args).fetchone()
        if row is None:
            return 0
        value, limit = row[0], self._seq_limit()
        if not isinstance(value, int) or value > limit:
            raise _DamagedError(f"{what} is {value!r:.40}, not a seq of at most {limit}")
        return value

    def _seq_limit(self) -> int:
        """The highest seq the log can number on from: the block reserved at open, after
        it, must stay within SEQ_MAX. Only damage (a flipped high bit) comes near it: a
        thousand events a second take 146 million years to."""
        return SEQ_MAX - self.seq_block

    @property
    def last_seq(self) -> int:
        """The newest event's seq (held, written or pruned since); 0 before the first.

        After an unclean exit this is the newest event that was written: the next event's
        seq is higher than any given out before the exit, so there may be a gap.
        """
        return self._last_seq

    @_locked
    def append(self, kind: str, ts: float, **fields: Any) -> Event:
        """Give the event its seq and hold it for the next flush; returns the full event.

        The event is as it will be written and read back: a ts or field it could not
        hold is changed (see `_writable`), and one too long is cut (`_bounded`), so what
        subscribers get live is what the log repeats."""
        ts, fields = self._writable(kind, ts, fields)
        if self._next_seq > max(self._reserved, self._floor_saved) and self._reserve_in_append:
            # More than half a block since the last flush (or flushes are failing, or one
            # is slow). Kept in `.seq` alone, never the database: a flush may be writing
            # it, and the append would wait for its sync or another process's lock. The
            # next flush records it in the database too (`_db_reserved`).
            upto = self._next_seq - 1 + self.seq_block
            try:
                self._save_floor(upto)
                self._reserved = max(self._reserved, upto)
            except OSError as exc:
                # The number is given out anyway; the next flush tries to reserve again.
                self._reserve_in_append = False
                self._failed(exc)
        event = _bounded({"class": "event", "seq": self._next_seq, "ts": ts, "kind": kind,
                          **fields})
        self._last_seq = self._next_seq
        self._next_seq += 1
        body = _body(event)
        size, memory = _row_bytes(kind, body), _held_memory(event, body)
        while self._held and self._past_bounds(size, memory):
            self._drop_oldest()
        self._held.append(_Held(event, self._clock(), body, size, memory))
        self._held_bytes += size
        self._held_memory += memory
        return event

    def _past_bounds(self, size: int, memory: int) -> bool:
        """Whether one more held event, of `size` stored bytes taking `memory`, would take
        the held ones past the bounds: `max_events`, and `max_bytes` of memory while writes
        fail, for they are held as long as that lasts (counted as stored text, they took
        about 6 times `max_bytes`); while writes work, `max_bytes` of stored bytes, as the
        prune after the write bounds them, for they are held until that flush only."""
        if len(self._held) >= self.max_events:
            return True
        if self._failing_since is not None:
            return self._held_memory + memory > self.max_bytes
        return self._held_bytes + size > self.max_bytes

    def _writable(self, kind: str, ts: Any, fields: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        """ts and fields as the table and strict JSON can hold them.

        A ts that is not a finite number would be NULL in SQLite (NaN), age out never
        (infinity) or not bind at all: it becomes the time the event is logged. A field that
        json_text cannot write (or that json cannot encode at all) is made writable by
        `_json_safe`. Either is logged once per kind, since it is a bug in what makes the
        event, not in the log."""
        changed = []
        try:
            stamp = float(ts)
        except (TypeError, ValueError, OverflowError):
            stamp = math.nan
        if not math.isfinite(stamp):
            changed.append(f"ts {ts!r} is not a finite number: the time it was logged is kept")
            stamp = time.time()
        if _text_or_none(fields) is None:
            fields = {
                _safe_str(str(key)): value if _text_or_none(value) is not None
                else _json_safe(value)
                for key, value in fields.items()
            }
            changed.append("a field JSON cannot hold as it is (a lone surrogate, nesting too "
                           "deep, not a JSON type) is kept as text, or null")
        if changed and kind not in self._changed_kinds:
            self._changed_kinds.add(kind)
            log.warning(
                "event log %s: a %s event is logged changed: %s; later %s events are changed "
                "the same way without a warning; the code that makes them needs a fix",
                self.path, kind, "; ".join(changed), kind,
            )
        return stamp, fields

    def flush(self, now: float) -> bool:
        """Write the events held when it begins in one transaction, and prune.

        Returns whether nothing is held when it returns: True when the write worked (or
        there was nothing to write) and no event was appended while it wrote; False when
        the write failed (the events stay held, and readable, for the next flush) or
        events appended meanwhile are held for the next flush. It returned True for those
        too, saying all was written while they were only in memory. Never raises for a
        database or file system error; waits at most BUSY_TIMEOUT_MS for another
        process's lock. Holds the state's lock only to take what to write and to mark it
        written (the module docstring).
        """
        with self._flush_lock:
            return self._write(now, final=False)

    def _write(self, now: float, final: bool) -> bool:
        """The flush, run holding `_flush_lock`; the state's lock is taken for the work in
        memory before and after the write, and held throughout when `final` (close).
        Returns whether nothing is held after it (see `flush`)."""
        with self._lock:
            given_out = self._next_seq - 1  # after an unclean exit, more than last_seq
            if final:
                # Give back the unused part of the block: a clean restart continues at once.
                reserve: Optional[int] = given_out
            elif self._reserved - given_out < self.seq_block // 2:
                reserve = given_out + self.seq_block
            elif self._db_reserved < self._reserved:  # one `append` kept in `.seq` alone
                reserve = self._reserved
            else:
                reserve = None
            held, held_bytes = list(self._held), self._held_bytes  # the same events
            age_due = self._pruned_at is None or not 0 <= now - self._pruned_at < PRUNE_EVERY_S
            if not (held or reserve is not None or age_due or self._lost_upto is not None):
                return True
            set_asides = self._set_asides
        try:
            if reserve is not None and not final:
                self._save_floor(reserve)  # before the database: never below it
            # Events written are synced with their commit (see `_Transaction`); a flush
            # that only prunes, or gives the block back at exit, is not.
            durable = bool(held) or (reserve is not None and not final)
            rows = self._on_sound_db(
                lambda: self._commit(now, held, held_bytes, reserve, durable))
        except _WRITE_ERRORS as exc:
            with self._lock:
                self._failed(exc)
            return False
        with self._lock:
            if self._set_asides == set_asides:  # no damage met: this database is sound
                self._damage_streak_ended()
            self._rows, self._stored = rows
            self._lost_upto = None
            self._pruned_at = now
            if held:
                self._boot_row = None
                self._forget_written(held[-1].event["seq"])
            if reserve is not None:
                self._db_reserved = reserve
                self._reserved = reserve if final else max(self._reserved, reserve)
            self._recovered(len(held))
            nothing_held = not self._held
        if final and reserve is not None:
            try:  # give the block back here too; if not, a clean restart leaves a gap
                self._save_floor(reserve, lower=True)
            except OSError as exc:
                log.warning("event log %s: %s%s: %s", self.path, self.path, FLOOR_SUFFIX, exc)
        return nothing_held

    def _forget_written(self, upto: int) -> None:
        """Stop holding the events up to seq `upto`, now written. Those appended while the
        write ran stay held; those of it dropped meanwhile (`_drop_oldest`) are gone
        already, and are below `_served_from`."""
        while self._held and self._held[0].event["seq"] <= upto:
            written = self._held.popleft()
            self._held_bytes -= written.size
            self._held_memory -= written.memory

    def _commit(
        self, now: float, held: list[_Held], held_bytes: int, reserve: Optional[int],
        durable: bool,
    ) -> tuple[int, int]:
        """Prune, write `held` (of `held_bytes`), and record `reserve` in one transaction;
        returns the rows the table holds after it and their bytes.

        Pruning comes first and makes room for `held`: SQLite reuses the pages a delete
        freed (its free list, https://sqlite.org/fileformat2.html#the_freelist) in the same
        transaction, so a flush at the bound does not grow the file by what it writes."""
        with self._transaction(durable=durable):
            if self._lost_upto is not None:  # a new database in place of a damaged one
                self._record_lost(self._lost_upto, reserve)
            rows, stored = self._prune(now, len(held), held_bytes)
            if held:
                self._db.executemany(
                    "INSERT INTO events (seq, ts, kind, body, boot_s) VALUES (?, ?, ?, ?, ?)",
                    [(h.event["seq"], h.event["ts"], h.event["kind"], h.body, h.boot_s)
                     for h in held],
                )
                rows += len(held)
                stored += held_bytes
                if self._boot_row is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO boot (id, boot_id, first_seq) VALUES (0, ?, ?)",
                        self._boot_row,
                    )
            if reserve is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO seq_reserved (id, upto) VALUES (0, ?)", (reserve,)
                )
        return rows, stored

    def _on_sound_db(self, work: Callable[[], T]) -> T:
        """work() on the database, done once more when it failed for a WAL that could not
        grow (`_restart_wal`), or on a new database when this one was found damaged
        (`_recover`): the events held, the one that met the damage among them, go there."""
        try:
            if self._damage_found is not None:
                self._set_aside_found(self._damage_found)
            if self._reopen_due:
                self._reopen()
            return work()
        except _WRITE_ERRORS as exc:
            if not (self._restart_wal(exc) or self._recover(exc)):
                raise
        return work()

    def _recover(self, exc: BaseException) -> bool:
        """When exc says the database is damaged (SQLITE_CORRUPT, SQLITE_NOTADB: flash lost
        a page under the running daemon), move it aside as opening does (`_move_aside`),
        open a new one and return True: what met the damage is worth doing again there.

        Left as it was, every flush failed until the daemon stopped, holding the new
        events in memory (and dropping the oldest past the bounds) and losing them at exit,
        and every `events` answer was an error: the damage was only set aside at the next
        start. The events written to the damaged file are lost, as at a start; `oldest_seq`
        is above them, as for pruned ones. The held events are kept and written to the new
        one, and numbering goes on from memory: no number is given twice.

        sqlite3.DatabaseError, naming both, when the file cannot be moved (a read-only
        directory): then only the move is tried again by the next call that needs the
        database (`_set_aside_found`)."""
        if not (isinstance(exc, sqlite3.DatabaseError) and _damaged(exc)):
            return False
        self._damage_found = exc
        self._set_aside_found(exc)
        return True

    def _set_aside_found(self, exc: sqlite3.DatabaseError) -> None:
        """Move the file `_recover` found damaged aside and open a new one; the error when
        it cannot be moved (see `_recover`), the file still there and the connection closed.

        Only the move is tried again: opening the damaged file again, as the next flush
        did, read and checked every page of it (quick_check), on every flush and every
        `events` query, to find the same damage and fail the same move. The first set-aside
        of a streak (`_damage_streak_ended`) is logged in full; the later ones, storage
        that damages each new file too, at DEBUG and briefly at the 10th, 100th..., or
        they were an error a second, each the whole text, for as long as it lasted."""
        self._reopen_due = True  # the connection is closed from here on
        try:
            named = self._move_aside()
        except OSError as failed:
            raise sqlite3.DatabaseError(f"{exc}; it cannot be moved aside: {failed}") from exc
        with self._lock:  # a flush may meet the damage: appends go on meanwhile
            self._damage_found = None
            self._set_asides += 1
            self._set_aside_state(exc, named)
        self._reopen()

    def _set_aside_state(self, exc: sqlite3.DatabaseError, named: str) -> None:
        """Log the set-aside, and note what the new database is to record."""
        lost = self._held[0].event["seq"] - 1 if self._held else self._last_seq
        if self._set_asides == 1:
            log.error(
                "event log %s is damaged (%s), found while running: moved to %s and a new "
                "log started; the events written to it, up to seq %d, are lost and no "
                "longer served; the %d event(s) not yet written are kept, and numbering "
                "goes on after seq %d. Keep the file for a post-mortem or delete it; check "
                "the storage",
                named, exc, _database_file(self.path) + DAMAGED_SUFFIX, lost,
                len(self._held), self._last_seq,
            )
        else:
            brief = logging.WARNING if _power_of_ten(self._set_asides) else logging.DEBUG
            log.log(brief, "event log %s is damaged again (%s): set aside %d times in a row, "
                    "events up to seq %d lost; check the storage", self.path, exc,
                    self._set_asides, lost)
        # What the new database is to record, set before it is opened: when opening fails
        # here, the next call opens it and the next write still records all this.
        self._lost_upto = self._last_seq
        self._unreadable.clear()
        if self._boot_id is not None:  # this boot's first seq, with the next events written
            self._boot_row = (self._boot_id, self._boot_first)

    def _reopen(self) -> None:
        """Open a new database in place of the one `_recover` moved aside; on a full disk
        with its index in memory, as opening does. The connection is closed again when
        this fails, and opening is tried again by the next call that needs it."""
        try:
            self._connect_or_alone()
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            raise
        self._reopen_due = False

    def _damage_streak_ended(self) -> None:
        """After a write that met no damage: end the streak of set-asides, with one line
        saying how long it was when it was more than the one its error named."""
        if self._set_asides > 1:
            log.info("event log %s: writing to a sound log again, after it was set aside %d "
                     "times in a row as damaged", self.path, self._set_asides)
        self._set_asides = 0

    def _record_lost(self, lost_upto: int, reserve: Optional[int]) -> None:
        """Record in a new database, begun mid-run, the last seq given out before it and
        the reservation (unless the write records one): after a restart `last_seq` and
        `oldest_seq` are above the lost events, as `_continue_after_lost` makes them."""
        if lost_upto:
            self._db.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (lost_upto,))
        if reserve is None:
            self._db.execute(
                "INSERT OR REPLACE INTO seq_reserved (id, upto) VALUES (0, ?)", (self._reserved,))

    def _restart_wal(self, exc: BaseException) -> bool:
        """After a write that found no room for the WAL to grow (ENOSPC, or EFBIG past
        RLIMIT_FSIZE): copy the whole WAL into the database, so that the next write starts
        it again from its beginning (https://sqlite.org/wal.html#checkpointing). Returns
        whether it did, and the write is worth trying again.

        The WAL is copied back only once it holds WAL_MAX_BYTES (wal_autocheckpoint), and
        only a commit makes it longer: one the disk stopped short of that was never copied
        back, and every write after the first that found no room failed, for good.
        PASSIVE never waits for another process's lock."""
        if not (isinstance(exc, sqlite3.DatabaseError) and _no_room(exc)):
            return False
        try:
            busy, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return False
        return bool(busy == 0 and frames > 0 and frames == copied)

    def _prune(self, now: float, held_rows: int, held_bytes: int) -> tuple[int, int]:
        """Delete the oldest events: those before the first one younger than max_age_s
        (by its stamp or, from this boot on, by the boot clock) or before `_served_from`,
        then as many more as it takes for the rest and the held events about to be written
        (`held_rows` of `held_bytes`) to be within max_events and max_bytes. Returns the
        rows left and their bytes."""
        # Each query reads only the events about to go and the young one it stops at:
        # those of earlier boots first, then (when they all go) those of this boot.
        stamped = now - self.max_age_s
        row = self._db.execute(
            "SELECT seq FROM events WHERE seq < ? AND ts >= ? ORDER BY seq LIMIT 1",
            (self._boot_first, stamped),
        ).fetchone() or self._db.execute(
            "SELECT seq FROM events WHERE seq >= ? AND (ts >= ? OR boot_s >= ?) "
            "ORDER BY seq LIMIT 1",
            (self._boot_first, stamped, self._clock() - self.max_age_s),
        ).fetchone()
        keep_from = max(self._next_seq if row is None else int(row[0]), self._served_from)
        aged, aged_bytes = self._tally(keep_from)
        rows, stored = self._rows - aged, self._stored - aged_bytes
        rows_room = self.max_events - held_rows
        bytes_room = self.max_bytes - held_bytes
        if rows > rows_room or stored > bytes_room:
            with contextlib.closing(self._db.execute(
                f"SELECT seq, {ROW_BYTES_SQL} FROM events WHERE seq >= ? ORDER BY seq",
                (keep_from,),
            )) as oldest:
                keep_from = self._next_seq  # unless one is found to keep
                for seq, size in oldest:
                    if rows <= rows_room and stored <= bytes_room:
                        keep_from = seq
                        break
                    rows, stored = rows - 1, stored - int(size)
        self._db.execute("DELETE FROM events WHERE seq < ?", (keep_from,))
        return rows, stored

    def _tally(self, below: int) -> tuple[int, int]:
        """How many events have a seq below `below`, and their bytes."""
        rows, size = self._db.execute(
            f"SELECT COUNT(*), TOTAL({ROW_BYTES_SQL}) FROM events WHERE seq < ?", (below,)
        ).fetchone()
        return int(rows), int(size)

    def _reserve(self, upto: int) -> None:
        """Record that numbers up to `upto` may be given out, synced before it returns."""
        self._save_floor(upto)
        with self._transaction(durable=True):
            self._db.execute(
                "INSERT OR REPLACE INTO seq_reserved (id, upto) VALUES (0, ?)", (upto,)
            )
        self._reserved = self._db_reserved = upto

    def _transaction(self, durable: bool = False) -> _Transaction:
        return _Transaction(self._db, durable)

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning(
                "event log %s: cannot write (%s); trying again on every flush, events are "
                "held in memory meanwhile (%d now)", self.path, exc, len(self._held),
            )
            # Held for a flush until now, they were bound by their stored bytes; from now
            # on they are held for as long as writes fail, and bound by their memory
            # (_past_bounds), about a sixth as many: the oldest go now, not at the next
            # append, which may be long in coming.
            while self._held and self._held_memory > self.max_bytes:
                self._drop_oldest()
        else:
            log.debug("event log %s: write failed again (%s)", self.path, exc)

    def _recovered(self, written: int) -> None:
        self._reserve_in_append = True
        if self._failing_since is not None:
            log.info(
                "event log %s: writing again after %d failed attempt(s) over %.0f s; "
                "%d held event(s) written, %d dropped",
                self.path, self._failures, time.monotonic() - self._failing_since,
                written, self._dropped,
            )
        elif self._dropped:
            log.info("event log %s: %d held event(s) written, %d dropped",
                     self.path, written, self._dropped)
        if self._burst_dropped:
            log.debug("event log %s: a burst of events within one flush: the oldest %d "
                      "were pruned before they were written (daemon.events_max, "
                      "daemon.events_max_bytes)", self.path, self._burst_dropped)
        self._failing_since = None
        self._failures = 0
        self._dropped = 0
        self._burst_dropped = 0

    def _drop_oldest(self) -> None:
        """Drop the oldest held event to keep the held ones within the bounds.

        With no write failing, this is a burst of more events within one flush than the
        log keeps: the prune after the write would remove them anyway, so it is counted
        and said at DEBUG, as a prune is not logged; it was a warning that writing
        failed while every write worked."""
        if self._failing_since is None:
            self._burst_dropped += 1
        elif self._dropped == 0:
            log.warning(
                "event log %s: %d events (%d bytes in memory) held unwritten "
                "(daemon.events_max, daemon.events_max_bytes); dropping the oldest held "
                "events until writing works again, from seq %d",
                self.path, len(self._held), self._held_memory, self._held[0].event["seq"],
            )
        dropped = self._held.popleft()
        self._held_bytes -= dropped.size
        self._held_memory -= dropped.memory
        self._served_from = dropped.event["seq"] + 1
        if self._failing_since is not None:
            self._dropped += 1

    def since(self, seq: int, limit: int) -> list[Event]:
        """Events with a seq above `seq`, oldest first, at most `limit`.

        A row whose bytes are damaged (see `_event`) is left out and the next one read in
        its place: raising for it failed every read that reached it, so a client could
        never get past it while it was kept."""
        return self._read(lambda db: self._read_since(db, seq, limit))

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """query(connection) on the database, holding the state's lock, without waiting
        for a flush: on the flush's connection when none is writing, else on a second,
        read-only one (`_reader`). Where that cannot be had or fails (a database opened
        for this process alone, none open, damage), it waits for the flush and reads as
        before, where damage is set aside (`_on_sound_db`)."""
        if self._flush_lock.acquire(blocking=False):
            try:
                with self._lock:
                    return self._on_sound_db(lambda: query(self._db))
            finally:
                self._flush_lock.release()
        with self._lock:
            reader = self._reader()
            if reader is not None:
                try:
                    return query(reader)
                except sqlite3.Error as exc:
                    log.debug("event log %s: read beside a flush: %s", self.path, exc)
                    self._close_reader()
        with self._flush_lock, self._lock:
            return self._on_sound_db(lambda: query(self._db))

    def _reader(self) -> Optional[sqlite3.Connection]:
        """The read-only connection for reads during a flush, opened on first use and
        again after the database was replaced; None when there is none to have.

        In WAL mode a reader sees the last commit and never waits for a writer
        (https://sqlite.org/wal.html#concurrency). Not where the database is open with its
        index in memory (locking_mode=EXCLUSIVE keeps every other connection out), nor
        while there is no sound database open."""
        if self._exclusive or self._reopen_due or self._damage_found is not None:
            return None
        if self._reader_db is not None and self._reader_generation != self._generation:
            self._close_reader()
        if self._reader_db is None:
            generation = self._generation
            try:
                reader = sqlite3.connect(
                    f"file:{urllib.parse.quote(self.path)}?mode=ro", uri=True,
                    isolation_level=None, check_same_thread=False)
            except sqlite3.Error:
                return None
            with contextlib.suppress(sqlite3.Error):
                reader.execute("PRAGMA cache_size=-256")  # as the writer's
            self._reader_db, self._reader_generation = reader, generation
        return self._reader_db

    def _close_reader(self) -> None:
        reader, self._reader_db = self._reader_db, None
        if reader is not None:
            with contextlib.suppress(sqlite3.Error):
                reader.close()

    def _read_since(self, db: sqlite3.Connection, seq: int, limit: int) -> list[Event]:
        """Read on db, holding the state's lock. A flush may commit between two queries
        here, and its events are then both in the table and still held: the held ones
        follow the last row read, so none is served twice and none is missed."""
        events: list[Event] = []
        after = max(seq, self._served_from - 1)
        while len(events) < limit:
            wanted = limit - len(events)
            # As bytes: a text column that is not UTF-8 would raise for the whole query.
            rows = db.execute(
                "SELECT seq, ts, CAST(kind AS BLOB), CAST(body AS BLOB) FROM events "
                "WHERE seq > ? ORDER BY seq LIMIT ?", (after, wanted),
            ).fetchall()
            events.extend(e for e in map(self._readable, rows) if e is not None)
            if rows:
                after = rows[-1][0]
            if len(rows) < wanted:  # the table is read to its end: held events follow
                events.extend(h.event for h in self._held if h.event["seq"] > after)
                break
        return events[:limit]

    def _readable(self, row: tuple[int, Any, bytes, bytes]) -> Optional[Event]:
        """The event a row holds; None (logged once per seq) when its bytes are damaged."""
        try:
            return _event(*row)
        except ValueError as exc:
            if row[0] not in self._unreadable:
                self._unreadable.add(row[0])
                log.error("event log %s: the event with seq %d is damaged (%s) and is left "
                          "out of `events` answers; check the storage",
                          self.path, row[0], exc)
            return None

    def oldest_seq(self) -> int:
        """The oldest event still readable; `last_seq + 1` when there is none. Read as
        `since` reads, without waiting for a flush."""
        return self._read(self._read_oldest)

    def _read_oldest(self, db: sqlite3.Connection) -> int:
        row = db.execute(
            "SELECT MIN(seq) FROM events WHERE seq >= ?", (self._served_from,)).fetchone()
        if row and row[0] is not None:
            return int(row[0])
        return self._held[0].event["seq"] if self._held else self._last_seq + 1

    def close(self, now: float) -> None:
        """Write what is held and close; never raises for a write error (it is logged).
        Waits for a flush that is writing, and holds every lock to the end: nothing is
        appended after the last write."""
        with self._flush_lock, self._lock:
            if not self._write(now, final=True) and self._held:
                log.error(
                    "event log %s: %d event(s) could not be written before exit and are lost",
                    self.path, len(self._held),
                )
            self._close_reader()
            try:
                self._db.close()
            except _WRITE_ERRORS as exc:
                log.warning("event log %s: close: %s", self.path, exc)
            self._release_lock()


# The log's directory, or a file of the log, is there but cannot be one: a regular file
# where the directory goes, a directory where a file goes, a symbolic link that cannot be
# followed to one, one this process may not write; its text names the path and what is
# wrong. The checks are pathcheck.py's, which the sysfs journal's lock file gets too
# (pidlock), so a broken link reads the same whichever file it is.
LogFileError = PathError


# SQLite's files of a WAL database (https://sqlite.org/tempfiles.html): the process writes
# each. Ours beside them: the lock is taken read-only, and the copy of the reservation is
# replaced, where this process may not write them.
_SQLITE_FILES = ("", "-wal", "-shm", "-journal")
_SIDE_FILES = (".lock", FLOOR_SUFFIX)


def check_place(path: str, make: bool = True) -> None:
    """Make the log's directory (unless not `make`), or raise LogFileError naming the path
    and what is wrong with it, where the log could not be kept. `wattgate check-config`
    checks with make=False: a directory not there yet is checked through the one it would
    be made in.

    Left to makedirs and SQLite, a state_dir that is a regular file said "File exists", a
    directory this process may not write "unable to open database file", a -wal or
    -journal that is a directory "disk I/O error", none of them naming the path; and a
    -shm or events.db that could not be written opened, and failed every flush after."""
    directory = os.path.dirname(os.path.abspath(path))
    existing = nearest_existing(directory)
    expect(existing, stat.S_ISDIR, "a directory")
    if existing != directory:
        expect_writable(existing, "the state directory is made in it")
        if not make:
            return
        os.makedirs(directory, exist_ok=True)
    expect_writable(directory, "the event log's files are made in it")
    database = _linked_database(path)
    for suffix in _SQLITE_FILES:
        if expect(database + suffix, stat.S_ISREG, "a file"):
            expect_writable(database + suffix)
    for suffix in _SIDE_FILES:
        expect(path + suffix, stat.S_ISREG, "a file")
    if database != path:  # the database is locked beside its file too (EventLog)
        expect(database + ".lock", stat.S_ISREG, "a file")


def _linked_database(path: str) -> str:
    """Where SQLite keeps the database at path and makes its -wal and -shm: beside the
    file a symbolic link resolves to (it resolves links, os_unix.c unixFullPathname), not
    beside the link. LogFileError naming the link when that directory is missing (a data
    partition not mounted) or one this process may not write: SQLite said only "unable
    to open database file" or "attempt to write a readonly database"."""
    target = _database_file(path)
    if target == path:
        return path
    expect_link_directory(path, f"SQLite makes the -wal and -shm of {path} (a symbolic "
                           "link) in it")
    return target


def _make_database_file(path: str) -> None:
    """As root, make the database file SQLite is about to create, and give it to the
    owner of its directory (`hand_to_directory_owner`): SQLite, run as root, gives its
    -wal and -shm to the database file's owner (os_unix.c), so the service's user can
    write all three after `sudo wattgate run` made them. An existing file is left alone,
    and a file that cannot be made is left to SQLite, whose error the log explains."""
    if os.geteuid() != 0:
        return
    target = _database_file(path)
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        hand_to_directory_owner(fd, target)
    finally:
        os.close(fd)


def _database_file(path: str) -> str:
    """The file SQLite opens for the database at path: the one a symbolic link resolves to
    (os_unix.c unixFullPathname), so its -wal and -shm are beside that file; path itself
    when it is not a link."""
    return os.path.realpath(path) if os.path.islink(path) else path


def _floor_text(upto: int) -> bytes:
    """The copy of a reservation as kept in `<path>.seq`: always 21 bytes."""
    return f"{upto:020d}\n".encode()


def _replace_floor(final: str, upto: int) -> None:
    """Write `upto` to a new file beside `final`, synced, and rename it over `final`: this
    needs the directory writable, as the database does for its -wal and -shm, not `final`."""
    tmp, data = f"{final}.{os.getpid()}.tmp", _floor_text(upto)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        hand_to_directory_owner(fd, tmp)
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, final)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(Path(final).parent)


_ONE_PER_STATE_DIR = ("one daemon per daemon.state_dir; stop the other one or give each its "
                      "own state_dir")


def _lock(lock_path: str, held_advice: str = _ONE_PER_STATE_DIR) -> Optional[int]:
    """An exclusive flock on lock_path, held by the returned fd; OSError EBUSY naming the
    holder's pid, and then `held_advice`, when another process (or another EventLog)
    holds it (pidlock.py).

    In a directory that cannot be written, an existing lock file is locked read-only; when
    there is none, no other process can have made one (nor can it write the log there), so
    there is nothing to lock. LogFileError, saying whose and which mode it is, for a lock
    file this process may not even read: "Permission denied" alone said neither; and,
    from lock_file, for a lock file that is a symbolic link gone wrong (pathcheck.PathError,
    whatever its errno: a link into a directory this process may not write is no lock file
    to take read-only)."""
    try:
        try:
            return lock_file(lock_path)
        except LogFileError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
        try:
            return lock_file(lock_path, create=False)
        except PermissionError:
            raise LogFileError(
                errno.EACCES, f"is not readable by {whose(os.stat(lock_path))}; one daemon "
                "per daemon.state_dir is kept by locking it", lock_path) from None
    except LockHeld as held:
        raise OSError(errno.EBUSY, f"{held}: {held_advice}") from None


class _Transaction:
    """BEGIN IMMEDIATE (the write lock up front) .. COMMIT, or ROLLBACK on an error.

    `durable` syncs the commit to disk (synchronous=FULL: in WAL mode one sync of the
    -wal per commit): a reservation must survive a power cut, and so must the events of
    a flush, or a power cut lost every event of the kernel's writeback delay (about 30 s)
    and not the last second the log promises. With NORMAL, for a commit that writes no
    event, SQLite syncs only at a checkpoint: a flush with nothing to write stays off
    the flash.
    """

    def __init__(self, db: sqlite3.Connection, durable: bool) -> None:
        self._db = db
        self._durable = durable

    def __enter__(self) -> None:
        if self._durable:
            self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._restore()
            raise

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                try:
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            else:
                self._rollback()
        finally:
            self._restore()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            # The error that brought us here is the one to report.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def _restore(self) -> None:
        if self._durable:
            self._db.execute("PRAGMA synchronous=NORMAL")


def _body(event: Event) -> str:
    """The event's own fields as stored: what was sent live (a NaN reading as null), so an
    `events` answer repeats it exactly and never holds what JSON cannot."""
    extra = {k: v for k, v in event.items() if k not in ("class", "seq", "ts", "kind")}
    text = json_text(extra)
    if text is None:
        raise ValueError(f"a {event.get('kind')} event cannot be written as JSON")
    return text


def _bounded(event: Event) -> Event:
    """event within the log's bound: each text field over TEXT_MAX characters cut to them
    and ELLIPSIS, named in `truncated`; then, if its line is still over EVENT_MAX_LINE, its
    largest fields left out and named in `omitted`, as the hub cuts a line (fit_message).

    A driver's or GStreamer's error text has no bounded length: stored whole, one event
    could take any amount of flash, and was sent live cut another way than an `events`
    answer cut it. Cutting the text keeps its head, which says what failed."""
    long = sorted(key for key, value in event.items()
                  if key not in KEPT_FIELDS and isinstance(value, str) and len(value) > TEXT_MAX)
    if long:
        event = {**event, **{key: event[key][:TEXT_MAX] + ELLIPSIS for key in long},
                 "truncated": long}
    fitted = fit_message(event, EVENT_MAX_LINE)
    if long and "omitted" in fitted:  # a cut text left out after all is only `omitted`
        cut = [key for key in long if key in fitted]
        fitted = {key: value for key, value in fitted.items() if key != "truncated"}
        if cut:
            fitted["truncated"] = cut
    return fitted


class _DamagedError(sqlite3.DatabaseError):
    """What PRAGMA quick_check found wrong in a database that opened: a page of a table
    or of the free list that is not sound (https://sqlite.org/pragma.html#pragma_quick_check)."""


def _errorcode(exc: sqlite3.DatabaseError) -> int:
    """SQLite's extended result code for exc, -1 when it carries none (one raised here)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code if isinstance(code, int) else -1


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether exc says the file is damaged (not locked, read-only or missing)."""
    return isinstance(exc, _DamagedError) or _errorcode(exc) & 0xFF in _SQLITE_DAMAGED


def _full(exc: sqlite3.DatabaseError) -> bool:
    """Whether exc says the disk is full: SQLITE_FULL, or the -shm file could not be sized
    (SQLITE_IOERR_SHMSIZE, what opening a WAL database on a full disk fails with)."""
    code = _errorcode(exc)
    return code & 0xFF == _SQLITE_FULL or code == _SQLITE_IOERR_SHMSIZE


def _no_room(exc: sqlite3.DatabaseError) -> bool:
    """Whether exc says a file could not grow: SQLITE_FULL (ENOSPC) or SQLITE_IOERR_WRITE,
    what a write past RLIMIT_FSIZE (EFBIG) fails with (os_unix.c, unixWrite)."""
    return _errorcode(exc) in (_SQLITE_FULL, _SQLITE_IOERR_WRITE)


def _power_of_ten(n: int) -> bool:
    """Whether n is 10, 100, 1000...: when a long streak is worth a line again."""
    return n >= 10 and str(n).rstrip("0") == "1"


def _text_or_none(value: Any) -> Optional[str]:
    """json_text, or None also for an object json cannot encode at all (TypeError)."""
    try:
        return json_text(value)
    except TypeError:
        return None


def _safe_str(text: str) -> str:
    """text that encodes to UTF-8: a lone surrogate is kept as its escape, e.g. '\\udcff'."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_safe(value: Any) -> Any:
    """value with each part JSON cannot hold replaced: strings made encodable, numbers of
    other types as int or float, other objects as their str; None when it is nested too
    deep to walk (or still cannot be written)."""

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return _safe_str(item)
        if item is None or isinstance(item, (bool, int, float)):
            return item
        if isinstance(item, dict):
            return {_safe_str(str(k)): walk(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [walk(v) for v in item]
        if isinstance(item, numbers.Integral):
            return int(item)
        if isinstance(item, numbers.Real):
            return float(item)
        return _safe_str(str(item))

    try:
        safe = walk(value)
    except RecursionError:
        return None
    return safe if _text_or_none(safe) is not None else None


def _event(seq: int, ts: Any, kind: bytes, body: bytes) -> Event:
    """The event a row holds; ValueError when its bytes are not what `_write` stores.

    SQLite keeps no checksum of a row: flash that flips bits inside one passes every page
    check (quick_check) and shows only when the row is read: text that is not UTF-8, a
    body that is not a JSON object, a ts that is not a number."""
    fields = json.loads(body or b"null")  # UnicodeDecodeError, JSONDecodeError: ValueErrors
    if not (isinstance(fields, dict) and isinstance(ts, (int, float))
            and isinstance(kind, bytes)):
        raise ValueError(f"ts {ts!r}, kind {kind!r}, body {(body or b'')[:40]!r}")
    return {"class": "event", "seq": seq, "ts": ts, "kind": kind.decode(), **fields}
