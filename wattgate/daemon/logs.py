"""Logging: structured journald entries under systemd, one plain line per record otherwise.

Under systemd, sysadmins read the daemon through `journalctl -u wattgate`, and the useful
questions are structured: "every knob write that failed" (`journalctl MESSAGE_ID=...`),
"everything while profile eco was active" (`journalctl PROFILE=eco`). So under systemd each
record goes to journald natively through `systemd.journal.JournalHandler` with its fields
(REFERENCE.md, "systemd": JournalHandler takes structured fields through `extra`). Anywhere
else - a shell, a container, a test - records go to stderr as single lines, with the same
fields appended as KEY=value so `grep` still works; MESSAGE_ID is left out there, a 32-digit
id for journalctl's matching, whose record's text already says what happened.

PROFILE names the profile in force on every journald entry, not only on the one that
announces a switch (`in_profile`), so `journalctl PROFILE=eco` gives the knob failures,
camera losses and stalls of that time too; the stderr lines leave it out, as the profile's
switch is a line of its own there.

Call sites attach fields with `fields()` / `event()`:

    log.warning("cannot set %s", knob, extra=event(MessageId.KNOB_FAILED, knob=path, value=v))
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional, TextIO

__all__ = [
    "JOURNAL_SOCKET",
    "LEVELS",
    "SYSLOG_IDENTIFIER",
    "MessageId",
    "event",
    "fields",
    "in_profile",
    "journal_handler",
    "set_level",
    "setup_logging",
    "stderr_handler",
    "under_journal",
]

# systemd-python ships no type information: its modules are Any to mypy.
_sd_journal: Any
try:
    _sd_journal = importlib.import_module("systemd.journal")
except ImportError:  # pragma: no cover - systemd-python is a dependency in pyproject
    _sd_journal = None

SYSLOG_IDENTIFIER = "wattgate"
JOURNAL_SOCKET = "/run/systemd/journal/socket"

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class MessageId:
    """MESSAGE_ID values of the events a sysadmin filters on (`journalctl MESSAGE_ID=...`).

    128-bit ids, fixed forever once released: scripts and journal catalogs match on them.
    """

    STARTED = "b2b0bb46b2254fa0907a955af133fe73"  # ready: socket listening, model loaded
    STOPPING = "36a7f107bdfb44efb58c88da6e4c32a7"
    RELOADED = "2532316eb40f43e5b96ba5348ef76493"  # SIGHUP handled, new config live
    CONFIG_ERROR = "8a70279594284e1f898cbcb5c094e28f"
    PROFILE_CHANGED = "5400937f1ffd4ed5bf52187d02592ed0"  # fields: PROFILE, REASON
    KNOB_FAILED = "513adca4f1644b36a5dc6803a05e6f70"  # fields: KNOB, VALUE, ERRNO
    SYSFS_RESTORED = "000a4f38d76a4877aa368c8609ce5478"  # rollback of saved sysfs values
    STALLED = "ed20f468230f41e29440667623f1a4d8"  # a pipeline stage stopped; no WATCHDOG=1
    CAMERA_LOST = "6ce5074b28054e9cba66474c14ba8123"
    CAMERA_FOUND = "33d035c45eda4203b2a69773d2035ba9"


# journald accepts field names of uppercase letters, digits and "_", not starting with a
# digit or "_" (a leading "_" marks trusted fields journald adds itself), at most 64 bytes.
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}\Z")
# Set by the handler on every entry; a caller passing one would clash with it.
_RESERVED = frozenset(
    {
        "MESSAGE",
        "PRIORITY",
        "LOGGER",
        "THREAD_NAME",
        "PROCESS_NAME",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
        "SYSLOG_IDENTIFIER",
    }
)


def _is_field(name: str) -> bool:
    return _FIELD_NAME.match(name) is not None


def fields(**kw: object) -> dict[str, str]:
    """Structured fields for `extra=`: names upper-cased and checked, values as strings.

    A field whose value is None is left out (absent means unknown, as in gpsd's JSON),
    so call sites need no conditionals. An invalid or reserved name is a programming error
    and raises ValueError at the call site rather than vanishing inside journald.
    """
    out: dict[str, str] = {}
    for key, value in kw.items():
        name = key.upper()
        if not _is_field(name) or name in _RESERVED:
            raise ValueError(f"invalid journal field name: {key!r}")
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "1" if value else "0"
        elif isinstance(value, bytes):
            out[name] = value.decode("utf-8", "replace")
        else:
            out[name] = str(value)
    return out


def event(message_id: str, **kw: object) -> dict[str, str]:
    """`fields()` plus the MESSAGE_ID of a catalogued event (see `MessageId`)."""
    if re.fullmatch(r"[0-9a-f]{32}", message_id) is None:
        raise ValueError(f"MESSAGE_ID must be 32 lowercase hex digits: {message_id!r}")
    return {"MESSAGE_ID": message_id, **fields(**kw)}


def under_journal(
    environ: Optional[Mapping[str, str]] = None,
    stream: Optional[TextIO] = None,
    journal_socket: str = JOURNAL_SOCKET,
) -> bool:
    """True when records should go to journald natively.

    systemd sets JOURNAL_STREAM=<st_dev>:<st_ino> when it connects stdout/stderr to the
    journal; comparing it with stderr's own fstat tells "our stderr is the journal" apart
    from "a child of a service whose stderr was redirected" (systemd.exec(5)). INVOCATION_ID
    is set for every unit, also with StandardError=file:; journald is then still the right
    place, provided its socket exists (a container without journald has neither).
    """
    env = os.environ if environ is None else environ
    out = sys.stderr if stream is None else stream
    stream_id = env.get("JOURNAL_STREAM", "")
    if stream_id:
        try:
            st = os.fstat(out.fileno())
            if stream_id == f"{st.st_dev}:{st.st_ino}":
                return True
        except (OSError, ValueError, AttributeError):
            pass
    return bool(env.get("INVOCATION_ID")) and os.path.exists(journal_socket)


_profile: Optional[str] = None  # the profile in force, stamped on journald entries


def in_profile(name: Optional[str]) -> None:
    """The profile in force from now on (None: none, power control stopped), given as
    PROFILE to every journald entry that does not name one itself."""
    global _profile
    _profile = name


def _structured(record: logging.LogRecord) -> dict[str, Any]:
    # Fields given through extra= become attributes of the record; the standard LogRecord
    # attributes are all lower/camel case, so an all-caps name is always ours.
    return {k: v for k, v in vars(record).items() if _is_field(k) and k not in _RESERVED}


class _StderrFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger>: <message> KEY=value ...`, always on one line.

    One record is one line so that line-oriented tools (grep, tail, syslog relays, a serial
    console) never see half a record; newlines inside messages and tracebacks are folded
    into " | ".
    """

    def formatTime(self, record: logging.LogRecord, datefmt: Optional[str] = None) -> str:
        t = time.localtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        extra = " ".join(
            f"{k}={_quote(v)}" for k, v in _structured(record).items() if k != "MESSAGE_ID"
        )
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {text}"
        if extra:
            line = f"{line} {extra}"
        return _fold(line)


def _fold(text: str) -> str:
    return " | ".join(part.rstrip() for part in text.strip("\n").splitlines())


def _quote(value: object) -> str:
    s = str(value)
    if s and not any(c.isspace() or c in "\"'=" for c in s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.cache
def _journal_handler_class() -> type[logging.Handler]:
    base: type[logging.Handler] = _sd_journal.JournalHandler

    class WattgateJournalHandler(base):  # type: ignore[valid-type,misc]
        """JournalHandler that sends only our structured fields.

        systemd-python's emit() forwards every attribute of the record (args, msg,
        levelname, ...) as a journal field; journald drops the lower-case ones, but on a
        small board that is wasted work per record. Here only the all-caps `extra=` fields
        travel, plus the fields journalctl users expect (PRIORITY, LOGGER, CODE_*).
        """

        def emit(self, record: logging.LogRecord) -> None:
            try:
                message = self.format(record)
                extra = dict(self._extra)
                if _profile is not None:
                    extra["PROFILE"] = _profile
                extra.update(_structured(record))
                self.send(
                    message,
                    PRIORITY=str(self.map_priority(record.levelno)),
                    LOGGER=record.name,
                    THREAD_NAME=record.threadName,
                    CODE_FILE=record.pathname,
                    CODE_LINE=record.lineno,
                    CODE_FUNC=record.funcName,
                    **extra,
                )
            except Exception:
                self.handleError(record)

    return WattgateJournalHandler


def journal_handler(sender: Optional[Callable[..., Any]] = None) -> logging.Handler:
    """A journald handler with SYSLOG_IDENTIFIER=wattgate.

    `sender` replaces `systemd.journal.send` (same signature); it exists so that tests and
    tools can observe the exact fields of each entry.
    """
    if _sd_journal is None:  # pragma: no cover - dependency missing
        raise RuntimeError("systemd-python is not installed")
    cls = _journal_handler_class()
    kwargs: dict[str, Any] = {"SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER}
    if sender is not None:
        kwargs["sender_function"] = sender
    handler = cls(**kwargs)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def stderr_handler(stream: Optional[TextIO] = None) -> logging.Handler:
    """A handler writing one line per record to `stream` (stderr by default)."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(_StderrFormatter())
    return handler


_OURS = "_wattgate_handler"


def _level(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"daemon.log_level: {level!r} is not one of {', '.join(LEVELS)}") from None


def setup_logging(level: str, force_stderr: bool = False) -> None:
    """Configure the root logger from `daemon.log_level` (debug|info|warning|error).

    Journald when `under_journal()`, unless `force_stderr` (e.g. `wattgate run` in a
    terminal of a unit's shell, or tests); stderr otherwise. Calling it again - on SIGHUP
    with a changed log_level - replaces the handler it installed instead of adding a second
    one, and leaves handlers installed by others alone. Python warnings are routed into
    logging so deprecation noise from libraries ends up in the same place.
    """
    levelno = _level(level)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _OURS, False):
            root.removeHandler(h)
            h.close()
    handler = (
        journal_handler()
        if not force_stderr and _sd_journal is not None and under_journal()
        else stderr_handler()
    )
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(levelno)
    logging.captureWarnings(True)


def set_level(level: str) -> None:
    """Change the level only (a reload that keeps the destination)."""
    logging.getLogger().setLevel(_level(level))
