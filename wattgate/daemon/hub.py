"""Fan-out of results and events to connected clients, on the event loop only.

A message is serialised once, then queued on every subscriber. Each client has a
bounded queue of droppable messages (results, events, power readings): when it is
full the oldest is dropped and counted, and the client later gets one `overflow` message
saying how many it lost, where the lost ones would have been. Replies are never dropped,
and what a client gets comes in the order it was queued: a result queued before a reply
(to an `unsubscribe`, say) is sent before it, never after. A client that stops reading
therefore costs a bounded amount of memory and never slows the pipeline or the
other clients: nothing here ever waits on a socket.

Results can come in batches (with many subscribers the event loop takes what the
inference thread made since it last looked, see handoff.py): `publish_all` sends each
subscriber its share of a batch in one write, a system call that wakes its reader once
instead of once per result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import deque
from typing import Any, Callable, Optional

Message = dict[str, Any]
log = logging.getLogger("wattgate.hub")
CLOSE_GRACE_S = 5.0  # a closing client has this long to read what is queued for it
DIRECT_LIMIT = 64 * 1024  # unsent bytes in a transport before messages queue instead
CATCH_UP_POLL_S = 0.005  # how often caught_up looks (only a flooding client waits on it)
MAX_LINE = 64 * 1024  # protocol limit on one line either way, newline included
KEPT_FIELDS = ("class", "seq", "ts", "kind")  # what fit_message never leaves out


def json_text(value: Any) -> Optional[str]:
    """value as compact, strict JSON (RFC 8259) that encodes to UTF-8, or None when it
    cannot be: a lone surrogate in a string, nesting too deep.

    JSON has no NaN or infinity, and Python's json module would write them as bare words
    that no other parser reads. Decoders drop detections that are not finite, but a reading,
    a figure derived from one, or an event logged from one still can be: such a number is
    written as null (what the daemon sends and what its event log keeps), and the first
    time a message class needs that is logged."""
    try:
        return _strict_text(value)
    except (UnicodeEncodeError, RecursionError):
        return None
    except ValueError:  # a NaN or an infinity
        pass
    _warn_not_strict(value)
    try:
        return _strict_text(_non_finite_as_null(value))
    except (ValueError, RecursionError):
        return None


def _strict_text(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text.encode()  # a lone surrogate: UnicodeEncodeError
    return text


def strict_line(message: Message) -> Optional[bytes]:
    """message as one line of json_text in UTF-8, or None when it cannot be one."""
    text = json_text(message)
    return None if text is None else text.encode() + b"\n"


def encode(message: Message) -> bytes:
    """One message the daemon made as one line of compact, strict UTF-8 JSON."""
    line = strict_line(message)
    if line is None:
        raise ValueError(f"a {message.get('class')} message cannot be written as JSON")
    return line


def fit_message(message: Message, limit: int) -> Message:
    """message, or when its line would be over limit bytes, a copy without its largest
    fields, their names listed in `omitted`.

    A message the daemon makes is one line, and a client may read with a fixed 64 KiB
    buffer: one event too long for a line (a driver's or a camera's error text) would
    break its framing live, and answer every later `events` request that starts before
    it `too_large`, a page no client could get past. Its number, time and kind always
    stay, so a client still counts and places it."""
    line = strict_line(message)
    if line is None or len(line) <= limit:
        return message
    sizes = sorted(
        ((len(json_text(value) or ""), key) for key, value in message.items()
         if key not in KEPT_FIELDS),
        reverse=True,
    )
    kept = dict(message)
    omitted: list[str] = []
    fitted = message
    for _, key in sizes:
        del kept[key]
        omitted.append(key)
        fitted = {**kept, "omitted": sorted(omitted)}
        shorter = strict_line(fitted)
        if shorter is not None and len(shorter) <= limit:
            break
    return fitted


def line_within(message: Message, limit: int = MAX_LINE) -> bytes:
    """encode(message), made to fit limit (fit_message) in the rare case it does not: one
    encoding for every message that fits, which on the results path is all of them."""
    line = encode(message)
    return line if len(line) <= limit else encode(fit_message(message, limit))


def _non_finite_as_null(value: Any) -> Any:
    """value with every float that is not finite replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _non_finite_as_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_non_finite_as_null(item) for item in value]
    return value


_warned: set[str] = set()


def _warn_not_strict(value: Any) -> None:
    kind = str(value.get("class", "logged event")) if isinstance(value, dict) else "value"
    if kind not in _warned:
        _warned.add(kind)
        log.warning("a %s message is not strict JSON: numbers in it that are not finite "
                    "are sent as null", kind)


class ClientSession:
    """One connection's outgoing side: a reply queue, a bounded data queue, one writer task."""

    def __init__(
        self, writer: asyncio.StreamWriter, queue_size: int, peer: str, creds: Any = None
    ) -> None:
        self.writer = writer
        self.peer = peer
        self.creds = creds
        self.topics: set[str] = set()
        self.filters: dict[str, Any] = {}
        # Both queues hold (order, ...): they are sent merged, in the order queued.
        self._order = 0
        self._replies: deque[tuple[int, bytes]] = deque()
        self._reply_bytes = 0  # their size
        self._data: deque[tuple[int, bytes, int]] = deque()  # (order, lines, how many messages)
        self._queued = 0  # messages in _data
        self._queue_size = queue_size
        self._dropped = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._ending = False  # the stream ends once what is queued is sent (end_stream)
        self._ended = False  # and has: nothing more may be written
        self._abort_timer: Optional[asyncio.TimerHandle] = None
        self.task: Optional[asyncio.Task[None]] = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._write_loop())

    def reply(self, message: Message) -> None:
        self.reply_line(encode(message))

    def reply_line(self, line: bytes) -> None:
        """Queue an already-encoded reply (never dropped, but after end_stream)."""
        if self._ending:
            return
        self._order += 1
        self._replies.append((self._order, line))
        self._reply_bytes += len(line)
        self._wake.set()

    def unsent(self) -> int:
        """Bytes of replies waiting in the daemon for the peer that the transport has not
        taken. Grows only if the peer stops reading: the writer hands every queued reply
        over as soon as the transport drains below its low-water mark, so the replies in
        the transport are at most one such batch. What the transport holds is not counted:
        much of it can be results, which a slow subscriber may leave unread (they are
        dropped and counted), and which must not make it look like a request flood."""
        return self._reply_bytes

    async def caught_up(self, below: int, timeout: float) -> bool:
        """Whether the peer reads until fewer than `below` bytes wait for it within timeout:
        at once if it reads; never while its socket is full because it does not."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.unsent() >= below and not self.writer.transport.is_closing():
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(CATCH_UP_POLL_S)
        return True

    def push(self, line: bytes, count: int = 1) -> None:
        """Send already-encoded droppable messages (`count` lines), or queue them, dropping
        the oldest when the queue would hold more than its size.

        While nothing is queued and the socket keeps up, the message goes straight to the
        transport: waking a writer task per subscriber per message cost about 8 us of
        event-loop time each (1 ms a result at 100 subscribers). Once the transport holds
        DIRECT_LIMIT unsent bytes the queue and its writer task take over, so a slow
        reader still costs a bounded amount of memory.
        """
        transport = self.writer.transport
        if (
            not self._data
            and not self._replies
            and not self._dropped
            and not self._closing
            and not transport.is_closing()
            and transport.get_write_buffer_size() < DIRECT_LIMIT
        ):
            transport.write(line)
            return
        while self._data and self._queued + count > self._queue_size:
            _, _, lost = self._data.popleft()
            self._queued -= lost
            self._dropped += lost
        self._order += 1
        self._data.append((self._order, line, count))
        self._queued += count
        self._wake.set()

    def close(self) -> None:
        """Flush what is queued, then close; a peer that does not read is cut off later."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        if self.task is not None and not self.task.done():
            # Only a writer still flushing needs the deadline; a finished one has closed.
            self._abort_timer = asyncio.get_running_loop().call_later(
                CLOSE_GRACE_S, self.abort
            )

    def end_stream(self) -> None:
        """Send what is queued, then the end of the stream, and nothing after it: the
        client reads its last answer and then EOF, while the connection stays open for
        the daemon to read what the client still sends (close() closes it). Closed with
        that unread, the client's read would fail with ECONNRESET after the answer, or
        its send before it reads the answer at all. Its subscriptions end here (the hub
        pushes nothing more), and a reply queued later is dropped."""
        self.topics.clear()
        self._ending = True
        self._wake.set()

    def abort(self) -> None:
        """Drop the connection now, queued data and all (abuse, or a peer that never reads)."""
        self.writer.transport.abort()

    def _next_batch(self) -> bytes:
        """Everything queued, in the order it was queued; the overflow notice goes where
        the oldest data left was (the lost messages were older still)."""
        parts = []
        replies, data = self._replies, self._data
        while replies or data:
            if data and (not replies or data[0][0] < replies[0][0]):
                parts.append(self._overflow())
                parts.append(data.popleft()[1])
            else:
                parts.append(replies.popleft()[1])
        parts.append(self._overflow())  # none by now: data is dropped only for newer data
        self._reply_bytes = 0
        self._queued = 0
        return b"".join(parts)

    def _overflow(self) -> bytes:
        """The overflow notice owed, once, or nothing."""
        dropped, self._dropped = self._dropped, 0
        return encode({"class": "overflow", "dropped": dropped}) if dropped else b""

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                batch = self._next_batch()
                if batch:
                    self.writer.write(batch)
                    await self.writer.drain()
                if self._closing and not (self._replies or self._data):
                    break
                if self._ending and not self._ended and not (self._replies or self._data):
                    self._ended = True
                    self.writer.write_eof()
            # Under the transport's high-water mark drain() does not wait, so the last
            # batch may still be in it: it goes out as the peer reads, and close()'s
            # timer cuts off a peer that does not (cancelling it now would leave the
            # connection open for as long as that peer keeps it).
            self.writer.close()
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        finally:
            if self._abort_timer is not None:
                self._abort_timer.cancel()
            self.writer.close()


Shape = Callable[["ClientSession", Message], Optional[Message]]


class Hub:
    """Who is connected and who wants which topic."""

    def __init__(self) -> None:
        self.sessions: set[ClientSession] = set()

    def add(self, session: ClientSession) -> None:
        self.sessions.add(session)

    def remove(self, session: ClientSession) -> None:
        self.sessions.discard(session)

    def subscribers(self, topic: str) -> int:
        return sum(1 for session in self.sessions if topic in session.topics)

    def publish(self, topic: str, message: Message, shape: Optional[Shape] = None) -> int:
        """Queue message for every subscriber of topic; returns how many got it.

        For a subscriber with filters, `shape` may return the message unchanged (sent as
        the shared encoding), a filtered copy, or None to skip the subscriber; the others
        get the message as it is.
        """
        return self.publish_all(topic, [message], shape)

    def publish_all(
        self, topic: str, messages: list[Message], shape: Optional[Shape] = None
    ) -> int:
        """publish each of messages, in order, with one push per subscriber; returns how
        many subscribers got any. Each message is encoded once, and only if someone
        subscribes, fitted to a line (line_within); subscribers without filters share one
        joined buffer."""
        if not messages:
            return 0
        lines: Optional[list[bytes]] = None
        whole: Optional[bytes] = None
        count = 0
        for session in self.sessions:
            if topic not in session.topics:
                continue
            if lines is None:
                lines = [line_within(m) for m in messages]
            if shape is None or not session.filters:
                if whole is None:
                    whole = b"".join(lines)
                session.push(whole, len(lines))
                count += 1
                continue
            parts = []
            for line, message in zip(lines, messages):
                shaped = shape(session, message)
                if shaped is not None:
                    parts.append(line if shaped is message else line_within(shaped))
            if parts:
                session.push(b"".join(parts), len(parts))
                count += 1
        return count
