"""`wattgate watch`: print what a subscription brings, and with --reconnect outlive the
daemon's restarts without printing an event twice or leaving one out that the log still has;
with or without it, the same for the events the daemon drops when the watch reads too slowly.

cli.py parses the arguments and renders each message; this module owns the loop, the
reconnect policy and the catch-up from the event log."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Callable, Optional

from wattgate.client import Client, ClientError, Message


def note(message: str) -> None:
    """One line on stderr; stdout is the command's output alone."""
    print(f"wattgate: {message}", file=sys.stderr)


# watch --reconnect: the waits between tries, doubling from the first to the last; how
# long a try waits for the hello (a daemon socket-activated again loads its model first:
# a try that times out is made again, so the wait need not cover the whole start).
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 2.0
RECONNECT_HELLO_S = 10.0
# A connection whose hello takes longer says so on stderr: a socket-activated daemon loads
# its model before it answers, and a watch silent for seconds looked hung.
SLOW_HELLO_S = 1.0
POLL_S = 0.5  # how often a watch waiting for messages looks whether --duration is over
REQUEST_S = 10.0  # how long a catch-up after an overflow waits for each answer
EVENTS_PAGE = 1000  # the most events one `events` answer may hold (docs/protocol.md)
SINCE_MAX = 2**62  # the highest `since`: an answer with no events, only last_seq
# A connect() to a socket being made again (a restart, systemd's socket unit): the path not
# there yet (ENOENT), or bound and not listening yet, or left by a daemon that died
# (ECONNREFUSED). Once connected, a socket bound but not yet given its mode and group
# (EACCES, EPERM) is that too; before, it is a user who may not connect: exit 77.
_NOT_THERE_YET = (errno.ENOENT, errno.ECONNREFUSED)
_NOT_OPEN_YET = (errno.EACCES, errno.EPERM)


class Watch:
    """`watch`: prints the messages it receives until --count or --duration says stop,
    counting across reconnects.

    With topic events, `last_seq` is the newest event number printed (before any, the
    log's newest when watching began): when events may have been missed, the log gives the
    events after it, and a live event at or below it, printed already, is not printed
    again. They may be missed after a reconnect (--reconnect: made while away), and after
    an `overflow` message: the daemon's queue for this client was full and it dropped the
    oldest messages in it, events among them (docs/protocol.md).

    The catch-up after an overflow is made with or without --reconnect: the connection is
    still up, so there is nothing for --reconnect to decide, and the drops come from this
    watch reading too slowly (a slow terminal, a pipe to a busy script), not from the
    daemon going away; the log still has the events, and a watch of events that leaves
    some out without a word is not one a script can rely on. The overflow message does not
    say which topics lost messages, so every overflow is followed by one `events` request;
    when only results or power readings were dropped its answer holds nothing new. Those
    are live only: dropped, they are gone, as the overflow line (printed where it came,
    as before) says.
    """

    def __init__(self, args: argparse.Namespace, render: Callable[[Message], str]) -> None:
        self.args = args
        self.render = render  # a message as the line printed for it
        self.deadline: Optional[float] = (
            time.monotonic() + args.duration if args.duration else None)
        self.count = 0
        self.catch_up = "events" in args.topics
        self.last_seq: Optional[int] = None
        self.said_unreadable = False  # stderr said the log cannot be read, and it still cannot
        self.said_slow = False  # stderr said a daemon was slow to answer (said once a watch)

    def done(self) -> bool:
        if self.args.count is not None and self.count >= self.args.count:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def left(self, most: float) -> float:
        """`most` seconds, or less if --duration ends sooner."""
        if self.deadline is None:
            return most
        return max(min(most, self.deadline - time.monotonic()), 0.001)

    def show(self, message: Message) -> None:
        if self.catch_up and message.get("class") == "event":
            seq = message.get("seq")
            if type(seq) is int:
                if self.last_seq is not None and seq <= self.last_seq:
                    return  # printed from the log after a reconnect or overflow, then live
                self.last_seq = seq
        print(self.render(message), flush=True)
        self.count += 1

    def follow(self, client: Client) -> None:
        """Print what comes until done, catching up the events after an overflow; a
        ClientError for a lost connection."""
        client.settimeout(POLL_S)
        while not self.done():
            try:
                message = next(client.messages())
            except ClientError as exc:
                if exc.code == "timeout":
                    continue
                raise
            self.show(message)
            if self.catch_up and message.get("class") == "overflow":
                client.settimeout(REQUEST_S)
                self.catch_up_events(client)
                client.settimeout(POLL_S)

    def subscribe(self, client: Client) -> None:
        """Subscribe, the first time after noting how far the event log goes: the events
        made from then on come live or from catch_up_events."""
        if self.catch_up and self.last_seq is None:
            with self._unless_log_unreadable():
                self.last_seq = _newest(client)
        client.request("subscribe", topics=self.args.topics)

    def catch_up_events(self, client: Client) -> None:
        """The events after last_seq from the log: made while away, while subscribing, or
        dropped for reading too slowly; printed before the live ones waiting behind them,
        and show() drops those printed here. A log that ends before last_seq was started
        over (a wiped or volatile state_dir) and numbers its events from 1 again: all of
        them are printed (_started_over), or the live ones would be dropped as printed
        until their numbers passed the old log's."""
        since = self.last_seq
        if not self.catch_up or since is None or self.done():
            return
        with self._unless_log_unreadable():
            for item in logged_events(client, since, EVENTS_PAGE, self._started_over):
                self.show(item)
                if self.done():
                    return

    def _started_over(self) -> None:
        self.last_seq = 0

    @contextlib.contextmanager
    def _unless_log_unreadable(self) -> Iterator[None]:
        """Go on past a daemon that cannot read its event log (`unavailable` to `events`),
        saying so on stderr, once until it can again (each overflow would say it again):
        the live messages still come."""
        try:
            yield
        except ClientError as exc:
            if exc.code != "unavailable":
                raise
            if not self.said_unreadable:
                missed = ("missed while reconnecting or dropped by the daemon for reading "
                          "too slowly" if self.args.reconnect else
                          "dropped by the daemon for reading too slowly")
                note(f"the event log cannot be read ({exc.message}): events {missed} are "
                     "not printed")
            self.said_unreadable = True
        else:
            self.said_unreadable = False

    def connect(self, path: str, timeout: Optional[float] = 10.0) -> Client:
        """A Client, saying on stderr (once a watch) when its hello takes over SLOW_HELLO_S."""
        said = threading.Event()

        def say() -> None:
            if not said.is_set() and not self.said_slow:
                self.said_slow = True
                note(f"waiting for the daemon at {path} to answer (one that is starting "
                     "loads its model first)")

        timer = threading.Timer(SLOW_HELLO_S, say)
        timer.daemon = True
        timer.start()
        try:
            return Client(path, timeout=timeout)
        finally:
            said.set()
            timer.cancel()

    def run(self, path: str) -> int:
        """Watch one connection until done; a ClientError when it is lost."""
        with self.connect(path) as client:
            self.subscribe(client)
            self.catch_up_events(client)
            self.follow(client)
        return 0

    def run_reconnecting(self, path: str) -> int:
        """Watch, connecting again whenever the connection is lost or cannot be made, with
        a line on stderr when it is lost (or the first connect fails) and one when it is
        back; errors that waiting will not mend end it as they do without --reconnect.

        A --duration that ends before any connection was made raises the last reason it
        could not be made (unavailable: exit 69, as without --reconnect): a script or a
        timer must tell "watched, nothing came" from "never connected". One that was
        connected for a while has watched, and ends 0 even if the daemon was gone at the
        end: --reconnect is there to outlive the daemon going away, and stderr says it did.

        Tries wait RECONNECT_FIRST_S, then twice as long each time up to RECONNECT_MAX_S;
        a connection that lasted RECONNECT_MAX_S starts that over (one that a daemon drops
        at once, again and again, does not make a try every RECONNECT_FIRST_S)."""
        delay = RECONNECT_FIRST_S
        said_down = False  # a line on stderr said there is no connection
        connected_before = False
        refused: Optional[ClientError] = None  # why the last try to connect failed
        while not self.done():
            made_at: Optional[float] = None  # when this connection was subscribed
            try:
                with self.connect(path, self.left(RECONNECT_HELLO_S)) as client:
                    self.subscribe(client)
                    made_at = time.monotonic()
                    if said_down:
                        note(f"{'reconnected' if connected_before else 'connected'} to {path}")
                    said_down, connected_before = False, True
                    self.catch_up_events(client)
                    self.follow(client)
                return 0
            except ClientError as exc:
                if not _lost(exc, connected_before):
                    raise
                if made_at is not None:
                    note(f"connection to {path} lost ({_why(exc)}); reconnecting")
                    if time.monotonic() - made_at >= RECONNECT_MAX_S:
                        delay = RECONNECT_FIRST_S
                else:
                    refused = exc
                    if not said_down:
                        note(f"cannot connect to {path} ({_why(exc)}); trying again until "
                             "it can")
                said_down = True
            time.sleep(self.left(delay))
            delay = min(delay * 2, RECONNECT_MAX_S)
        if not connected_before and refused is not None:
            raise _naming(refused, path)
        return 0


def _lost(exc: ClientError, connected_before: bool) -> bool:
    """Whether trying again may mend it: the connection closed or reset, a daemon that is
    full or gave no answer in time, a socket not there yet (_NOT_THERE_YET)."""
    if exc.code in ("closed", "timeout", "busy"):
        return True
    return exc.errno in _NOT_THERE_YET or (connected_before and exc.errno in _NOT_OPEN_YET)


def _naming(exc: ClientError, path: str) -> ClientError:
    """The error, its message naming the socket: a daemon's own refusal (`busy`: "too many
    clients") does not say which daemon refused."""
    if path in exc.message:
        return exc
    return ClientError(exc.code, f"{path}: {exc.message}", exc.errno)


def _why(exc: ClientError) -> str:
    """A lost or refused connection in a few words: the kernel's reason where it gave one."""
    if exc.errno is not None:
        return os.strerror(exc.errno)
    if exc.code == "closed":
        return "closed by the daemon"
    return str(exc)


def _newest(client: Client) -> int:
    """The newest event number in the daemon's log (0 for none yet)."""
    return int(client.request("events", since=SINCE_MAX, limit=1)["last_seq"])


def logged_events(
    client: Client, since: int, limit: int, started_over: Optional[Callable[[], None]] = None,
) -> Iterator[Message]:
    """Every event in the daemon's log after `since`, asking `limit` at a time until the
    newest (`events`, docs/protocol.md), for `wattgate events` and watch's catch-up after a
    reconnect or an overflow. Says on stderr which events after `since` the log no longer
    has, if any (an answer's oldest_seq above since + 1: pruned, or lost with a damaged log),
    and when the log ends before `since`: it was started over (daemon.state_dir wiped, or
    volatile on a read-only image), and the events to come get numbers `since` already
    passed, so a script that kept `since` would wait for them without a word. Given
    `started_over`, that is called instead and the log is read from its first event."""
    first = True
    while True:
        reply = client.request("events", since=since, limit=limit)
        if first and reply["last_seq"] < since:
            then = ("its events are numbered from there" if started_over is None
                    else "printing its events from the first")
            note(f"the event log ends at {reply['last_seq']}, before {since}: it was started "
                 f"over (daemon.state_dir wiped?); {then}")
            if started_over is not None:
                started_over()
                since = 0
                continue
        first = False
        if reply["oldest_seq"] > since + 1:
            note(f"events {since + 1} to {reply['oldest_seq'] - 1} are no longer in the "
                 "event log (pruned, or lost with a damaged log)")
        for item in reply["events"]:
            yield item
            since = item["seq"]
        if not reply["more"] or not reply["events"]:
            return
