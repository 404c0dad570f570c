"""The Python client of the wattgate socket protocol (docs/protocol.md); the CLI uses it.

One JSON object per line in each direction. The server speaks first (`hello`);
requests carry `cmd` and an `id` that the answer (a `reply`, `status` or `error`) echoes,
so results that arrive while a request is in flight are kept, in order, for `messages()`,
as is any message of a class this client does not know, whatever its id.

Ids: request() numbers its requests 1, 2, 3, ... and takes the answer with its integer
id. Client.send() sends a message as given, its id (any JSON value) chosen by the caller,
and its answer comes out of messages(). The two never share an integer id while either
waits for its answer: send() refuses one that a request() is waiting for (or gave up on
and whose answer has not come), and request() skips one that a send() is waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import itertools
import json
import math
import os
import pwd
import signal
import socket
import stat
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Any, Optional

Message = dict[str, Any]
DEFAULT_SOCKET = "/run/wattgate/wattgate.sock"
MAX_LINE = 64 * 1024  # the protocol's line limit, both ways
PROTO = 1  # the protocol's major version, hello.proto
# What a socket raises when its timeout runs out: socket.timeout (TimeoutError from Python
# 3.10 on), or BlockingIOError with a timeout of 0, non-blocking mode, where "operations
# fail ... if they cannot be completed immediately" (Python docs, socket, "Notes on socket
# timeouts"). Either is "timeout": the connection is still good.
_NO_WAIT = (socket.timeout, BlockingIOError)


# The classes that answer a request, carrying its id (docs/protocol.md, Server messages).
# Any other class is no answer, whatever id it carries: version 1 may add classes, which a
# client ignores, and a new one taken for an answer lacks the fields the caller reads.
ANSWER_CLASSES = frozenset({"reply", "status", "error"})


class _NotJSON(ValueError):
    """A number json.loads takes but JSON (RFC 8259) has not: NaN, Infinity, -Infinity, or
    one too large for a float (1e400, which json.loads makes inf)."""


def _no_constant(name: str) -> float:
    """json.loads' parse_constant: NaN, Infinity and -Infinity are refused."""
    raise _NotJSON(f"a number that is not finite, {name}")


def _finite(text: str) -> float:
    """json.loads' parse_float: a number written with a fraction or exponent, refused if
    it is too large for a float."""
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON(f"a number that is not finite, {text}")
    return value


def _message(line: bytes, source: str) -> Optional[Message]:
    """One line from the daemon as a message, None for an empty line (the protocol ignores
    them, as the daemon does with a request's), ClientError "protocol" for anything else
    (the socket is not a wattgate daemon's, or not one that speaks this protocol).

    Strict JSON, as the daemon writes (RFC 8259): json.loads' NaN and Infinity, kept,
    would be written back by the CLI's --json as output that is not JSON. JSON nested
    deeper than the parser recurses raises RecursionError, not ValueError: a line of a
    few thousand `[` is well under the line limit.
    """
    if not line.strip():
        return None
    try:
        message = json.loads(line, parse_constant=_no_constant, parse_float=_finite)
    except _NotJSON as exc:
        raise ClientError("protocol", f"{source} sent {exc}, which is not JSON: "
                                      f"{line[:64]!r}") from None
    except RecursionError:
        raise ClientError("protocol", f"{source} sent JSON nested too deeply to read: "
                                      f"{line[:64]!r}") from None
    except ValueError:  # not UTF-8, or not JSON
        raise ClientError("protocol", f"{source} sent a line that is not JSON: "
                                      f"{line[:64]!r}") from None
    if not isinstance(message, dict):
        raise ClientError("protocol", f"{source} sent JSON that is not an object: "
                                      f"{line[:64]!r}")
    return message


class ClientError(Exception):
    """The daemon answered with an `error` message, or the connection failed.

    `errno` is the kernel's error number where the connection failed with one (ENOENT,
    ECONNREFUSED, EACCES on connect; ECONNRESET, EPIPE in use), else None: a program that
    reconnects (`wattgate watch --reconnect`) tells a socket being recreated from one it
    may not open, and says why it lost a connection.
    """

    def __init__(self, code: str, message: str, errno: Optional[int] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.errno = errno


class _Answers:
    """Which message answers which request, for both clients; the others wait, in order,
    in `unsolicited`.

    A request whose caller stopped waiting (a timeout, or a cancelled await: asyncio's
    wait_for cancels the awaited task when it times out) is still answered later, in
    order. That answer is dropped when it comes: kept, it came out of messages() and
    next_message() among results and events, as if the daemon had sent it unasked.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._awaited: dict[int, Optional[Message]] = {}  # its answer once read
        self._abandoned: set[int] = set()
        # Integer ids of messages sent as given (Client.send), how many of each are still
        # unanswered: request() does not pick one, or their answers would be taken for its.
        self._sent: Counter[int] = Counter()
        self.unsolicited: deque[Message] = deque()

    def prepare(self, cmd: str, fields: dict[str, Any]) -> tuple[int, bytes]:
        """A new request's id and line, awaited from now; ClientError if it cannot be sent
        (then nothing is awaited)."""
        request_id = next(self._ids)
        while request_id in self._sent:
            request_id = next(self._ids)
        line = _encode({"cmd": cmd, "id": request_id, **fields})
        self._awaited[request_id] = None
        return request_id, line

    def claim(self, message: Message) -> None:
        """Note the integer id of a message about to be sent as given, so that request()
        leaves it alone until its answer has come; ClientError if a request() has it."""
        sent_id = message.get("id")
        if type(sent_id) is not int:  # no other id can be a request()'s (_answer_id)
            return
        if sent_id in self._awaited or sent_id in self._abandoned:
            raise ClientError("bad_request", f"{message.get('cmd')!r} not sent: id {sent_id} "
                                             "is a request()'s whose answer has not come")
        self._sent[sent_id] += 1

    def sort(self, message: Message) -> None:
        answer_id = _answer_id(message)
        if answer_id in self._awaited:
            self._awaited[answer_id] = message
        elif answer_id in self._abandoned:
            self._abandoned.discard(answer_id)
        else:
            if answer_id is not None and answer_id in self._sent:
                self._sent -= Counter({answer_id: 1})  # drops it at 0
            self.unsolicited.append(message)

    def take(self, request_id: int) -> Optional[Message]:
        """The answer to request_id once it has been read; the request is then done."""
        answer = self._awaited.get(request_id)
        if answer is not None:
            del self._awaited[request_id]
        return answer

    def next_unsolicited(self) -> Optional[Message]:
        return self.unsolicited.popleft() if self.unsolicited else None

    def abandon(self, request_id: int) -> None:
        """The caller no longer waits: its answer is dropped (at once if it has come).
        Nothing to do for a request whose answer was taken."""
        if request_id in self._awaited and self._awaited.pop(request_id) is None:
            self._abandoned.add(request_id)


class Client:
    def __init__(self, path: str = DEFAULT_SOCKET, timeout: Optional[float] = 10.0) -> None:
        self.path = path
        self._sock = _connect(path, timeout)
        self._buffer = bytearray()
        self._answers = _Answers()
        self._cut_short: Optional[str] = None  # why the connection can no longer be used
        try:
            self.hello = _hello(self._read(), path)
        except BaseException as exc:
            self._sock.close()
            if isinstance(exc, ClientError) and exc.code == "timeout":
                raise _no_hello(path, timeout) from None
            raise

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def settimeout(self, timeout: Optional[float]) -> None:
        self._sock.settimeout(timeout)

    def send(self, message: Message) -> None:
        """Send one message as given; its answer, if any, comes out of messages().

        ClientError "bad_request" (nothing sent) if its id is an integer that a request()
        is waiting for, or gave up on with its answer still to come: the answer to one
        would be taken for the other's. Other ids are the caller's to choose; request()
        skips an integer id sent here until its answer has come (the module docstring).

        ClientError "closed" if the daemon has gone away: a write to a connection the daemon
        closed (it stopped, crashed or restarted) fails with EPIPE or ECONNRESET. As a raw
        BrokenPipeError it would look like a closed stdout to the CLI, which then exits 0
        having printed nothing.
        """
        line = _encode(message)
        self._answers.claim(message)
        self._send_line(line)

    def _send_line(self, line: bytes) -> None:
        """Write one whole line, or none of it and ClientError "timeout", or cut the
        connection.

        The timeout bounds each wait for room in the socket's buffer. A line cut short by
        one (sent in part to a daemon that reads too slowly) cannot be taken back: the next
        line would be joined onto the part sent, one garbled line to the daemon, so the
        connection is shut down and every later call raises "closed" saying why. So it is
        after an exception that a signal handler raised during the writes (Ctrl-C's
        KeyboardInterrupt): Python runs the handler as a write returns, before its count
        is kept, so how much of the line went out is not known.
        """
        self._check_usable()
        sent, view = 0, memoryview(line)
        try:
            while sent < len(line):
                sent += self._sock.send(view[sent:])
        except _NO_WAIT:
            if not sent:
                raise ClientError("timeout", f"{self.path} took no request in time") from None
            self._cut(f"was cut short after {sent} of its {len(line)} bytes (no room for the "
                      "rest in time)")
            raise ClientError("timeout", f"{self._cut_short}; the connection is closed, as "
                                         "the next line would be joined onto it") from None
        except OSError as exc:
            raise _closed(self.path, exc) from None
        except BaseException as exc:
            self._cut(f"was cut short by {type(exc).__name__} while being sent")
            raise

    def _cut(self, how: str) -> None:
        """Shut down a connection left in the middle of a request line; say why from now on."""
        self._cut_short = f"a request to {self.path} {how}"
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def _check_usable(self) -> None:
        """ClientError "closed" once a send was cut short (_send_line)."""
        if self._cut_short is not None:
            raise ClientError("closed", f"the connection was closed when {self._cut_short}: "
                                        "connect again")

    def request(self, cmd: str, **fields: Any) -> Message:
        """Send one command and return its answer; an `error` answer raises ClientError."""
        request_id, line = self._answers.prepare(cmd, fields)
        try:
            self._send_line(line)
            return _answer(self._read_until(lambda: self._answers.take(request_id)))
        finally:  # a timeout: the answer that comes later is not a message for messages()
            self._answers.abandon(request_id)

    def messages(self) -> Iterator[Message]:
        """Every unsolicited message (results, events, overflow), in arrival order."""
        while True:
            yield self._read_until(self._answers.next_unsolicited)

    def _read_until(self, ready: Callable[[], Optional[Message]]) -> Message:
        """Read and sort messages until ready() gives one."""
        while (found := ready()) is None:
            self._answers.sort(self._read())
        return found

    def _read(self) -> Message:
        """The next line as a message. A timeout keeps what was read, so reading can go on.

        A line over MAX_LINE bytes, its newline included, is "too_large" however the
        kernel splits it: found whole in one read, or as MAX_LINE bytes with no newline.
        """
        self._check_usable()
        while True:
            end = self._buffer.find(b"\n")
            if end >= MAX_LINE or (end < 0 and len(self._buffer) >= MAX_LINE):
                raise _too_large(self.path)
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                message = _message(line, self.path)
                if message is not None:
                    return message
                continue
            try:
                chunk = self._sock.recv(65536)
            except _NO_WAIT:
                raise ClientError("timeout", f"no message from {self.path} in time") from None
            except OSError as exc:  # ECONNRESET: the daemon closed with our request unread
                raise _closed(self.path, exc) from None
            if not chunk:
                raise ClientError("closed", f"{self.path} closed the connection")
            self._buffer += chunk


class AsyncClient:
    """The same protocol for asyncio programs: `await AsyncClient.connect(path)`. Unlike
    Client, only connect() has a timeout: wrap a request in asyncio.wait_for for one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 path: str = DEFAULT_SOCKET) -> None:
        self.path = path
        self._reader = reader
        self._writer = writer
        self._answers = _Answers()
        self._reading = asyncio.Lock()
        self.hello: Message = {}

    @classmethod
    async def connect(cls, path: str = DEFAULT_SOCKET,
                      timeout: Optional[float] = 10.0) -> AsyncClient:
        """Connected, with the daemon's hello read within `timeout` seconds (None: no
        limit), or ClientError("timeout") as Client's: a daemon still loading its model, or
        a socket that accepts and says nothing, would otherwise be waited for forever."""
        # Connected here, not by open_unix_connection(path): asyncio takes connect()'s
        # EAGAIN for a connection in progress, and the full queue it means for a made one.
        reader, writer = await asyncio.open_unix_connection(sock=_connect(path, 0.0),
                                                            limit=MAX_LINE)
        client = cls(reader, writer, path)
        try:
            client.hello = _hello(await asyncio.wait_for(client._read(), timeout), path)
        except BaseException as exc:
            await client.close()
            if isinstance(exc, asyncio.TimeoutError):
                raise _no_hello(path, timeout) from None
            raise
        return client

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, cmd: str, **fields: Any) -> Message:
        """Send one command and return its answer; an `error` answer raises ClientError."""
        request_id, line = self._answers.prepare(cmd, fields)
        try:
            try:
                self._writer.write(line)
                await self._writer.drain()
            except OSError as exc:  # EPIPE, ECONNRESET: the daemon has gone away
                raise _closed(self.path, exc) from None
            return _answer(await self._read_until(lambda: self._answers.take(request_id)))
        finally:  # cancelled (asyncio.wait_for's timeout): its answer will come unasked for
            self._answers.abandon(request_id)

    async def next_message(self) -> Message:
        """The next unsolicited message (result, event, power, overflow)."""
        return await self._read_until(self._answers.next_unsolicited)

    async def _read_until(self, ready: Callable[[], Optional[Message]]) -> Message:
        """Read and sort messages until ready() gives one, taking turns with other tasks.

        A StreamReader has one reader at a time: a second task's readline() raises
        RuntimeError. Each task reads one message per turn, so a task whose message
        another read for it finds it on its next turn, not after that other task's wait.
        """
        while True:
            async with self._reading:
                found = ready()
                if found is not None:
                    return found
                self._answers.sort(await self._read())

    async def _read(self) -> Message:
        """The next line as a message; the same ClientErrors as the sync client's.

        readline() raises ValueError for a line over the reader's limit and returns a
        partial line at the end of the stream: a connection closed mid-line is "closed",
        not a line that is not JSON.
        """
        message = None
        while message is None:
            try:
                line = await self._reader.readline()
            except ValueError:
                raise _too_large(self.path) from None
            except OSError as exc:  # ECONNRESET: the daemon closed with our request unread
                raise _closed(self.path, exc) from None
            if len(line) > MAX_LINE:  # the reader's limit lets one more byte through
                raise _too_large(self.path)
            if not line.endswith(b"\n"):
                raise ClientError("closed", f"{self.path} closed the connection")
            message = _message(line, self.path)
        return message


def _connect(path: str, timeout: Optional[float]) -> socket.socket:
    """A stream socket connected to path, or ClientError saying why not.

    A Unix socket's connect() never waits for the peer (unix(7)): it is made at once or
    refused, so a non-blocking one (timeout 0.0, for asyncio) is connected on return.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise _unavailable(path, exc) from None
    return sock


def _unavailable(path: str, exc: OSError) -> ClientError:
    """Why connecting failed (strerror when the kernel gave an errno, else the text), with
    the code and the words that say what to do: try again ("busy"), ask for access
    ("forbidden"), or see to the daemon ("unavailable").

    connect() on a Unix socket with a timeout (non-blocking underneath) fails EAGAIN when
    the listener's queue of connections not yet accepted is full (unix(7)): a daemon is
    there, busy or still starting, as with "busy". It needs write permission on the socket
    and search permission on the directories above it, else EACCES (unix(7)). An over-long
    path raises OSError("AF_UNIX path too long"), whose strerror is None.
    """
    reason = f"cannot connect to {path}: {exc.strerror or exc}"
    if exc.errno == errno.EAGAIN:
        return ClientError("busy", f"{reason}: its queue of new connections is full (the "
                                   "daemon is busy or still starting); try again", exc.errno)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ClientError("forbidden", f"{reason}: {_who_may_connect(path)}", exc.errno)
    if exc.errno == errno.ECONNREFUSED and _is_other_than_socket(path):
        # ENOTSOCK, not the kernel's ECONNREFUSED: no daemon will ever listen on a file or
        # a directory (`run` refuses one), so `watch --reconnect` must not wait for one.
        return ClientError("unavailable", f"{reason}: not a socket", errno.ENOTSOCK)
    if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
        return ClientError("unavailable", f"{reason}: is the daemon running? (systemctl status "
                                          "wattgate; daemon.socket says where it listens)",
                           exc.errno)
    return ClientError("unavailable", reason, exc.errno)


def _is_other_than_socket(path: str) -> bool:
    """Whether something other than a socket is at path: connect() refuses a file or a
    directory as it refuses a socket nobody listens on, ECONNREFUSED. A path gone by now
    is no such thing: a daemon stopping or starting removes its socket, and a watch that
    retries must go on waiting for it."""
    try:
        return not stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _who_may_connect(path: str) -> str:
    """Who the socket's mode lets connect, and so what to do. Connecting needs write
    permission (unix(7)): joining the group helps only where the mode gives the group read
    and write. A socket of mode 0600 was said to let its group in, and the user told to
    join it: no way in, and for a daemon run as root, advice to join group root. Where the
    socket cannot be looked at (a directory above it the user may not search), its group
    is the likely way in and cannot be named."""
    try:
        info = os.stat(path)
    except OSError:
        return ("its owner and group may connect: add the user to the socket's group "
                "(usermod -aG GROUP USER) and log in again")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o060 == 0o060:
        group = _name(grp.getgrgid, info.st_gid)
        return (f"its owner and group may connect: add the user to group {group} "
                f"(usermod -aG {group} USER) and log in again")
    return (f"only its owner ({_name(pwd.getpwuid, info.st_uid)}) may connect (mode "
            f"{mode:04o}; daemon.socket_mode, or the unit's SocketMode=, decides whether its "
            "group may too)")


def _name(lookup: Callable[[int], Any], number: int) -> str:
    """The name of a uid or gid (pwd.getpwuid, grp.getgrgid), or the number if it has none."""
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


def _no_hello(path: str, timeout: Optional[float]) -> ClientError:
    """No hello within the connect's timeout."""
    return ClientError("timeout", f"no hello from {path} within {timeout:g} s: the daemon may "
                       "still be starting (a socket-activated start loads the model first)")


def _too_large(source: str) -> ClientError:
    """A line from the daemon over the protocol's limit, its newline included."""
    return ClientError("too_large", f"a line from {source} is over {MAX_LINE} bytes")


def _closed(path: str, exc: OSError) -> ClientError:
    """The connection was lost while in use (EPIPE, ECONNRESET): the same "closed" error as
    an orderly end of the connection, with the kernel's reason."""
    return ClientError("closed", f"{path} closed the connection ({exc.strerror or exc})",
                       exc.errno)


def _encode(message: Message) -> bytes:
    """One request line, strict JSON within the line limit, or ClientError before anything
    is sent.

    json.dumps writes NaN and Infinity by default, which are not JSON, and writes a string
    holding a surrogate (a byte of a command-line argument that is not UTF-8) as a \\u
    escape that is not a character: the daemon would answer bad_json without an id, and
    request() would wait for its answer until it timed out.
    """
    try:
        text = json.dumps(message, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        line = text.encode() + b"\n"
    except UnicodeEncodeError:
        raise ClientError("bad_request", f"{message.get('cmd')!r} not sent: a string in it "
                                         "is not Unicode text (a surrogate)") from None
    except ValueError as exc:  # NaN or Infinity, or a circular reference
        raise ClientError("bad_request", f"{message.get('cmd')!r} not sent: {exc}") from None
    if len(line) > MAX_LINE:
        # The daemon would answer too_large without an id and close the connection: the
        # caller would see the connection lost, not why.
        raise ClientError("too_large", f"{message.get('cmd')!r} not sent: {len(line)} bytes, "
                                       f"over the {MAX_LINE}-byte line limit")
    return line


def _answer_id(message: Message) -> Optional[int]:
    """The id of the request message answers, if it answers one: a JSON integer id on a
    message of an answer's class (ANSWER_CLASSES). Not ==, for which True and 1.0 equal 1:
    the answer to a request a program sent itself with id true or 1.0 would be taken for
    ours. A message of another class, one this client may not know, goes among the
    unasked whatever its id."""
    answer_id = message.get("id")
    if type(answer_id) is int and message.get("class") in ANSWER_CLASSES:
        return answer_id
    return None


def _answer(message: Message) -> Message:
    """The message, or ClientError if it is an `error` (a refused request)."""
    if message.get("class") == "error":
        raise ClientError(str(message.get("code")), str(message.get("message")))
    return message


def _hello(message: Message, path: str) -> Message:
    """The first message, checked by both clients: a hello of this client's protocol
    version, or ClientError. A breaking change raises `proto` (docs/protocol.md,
    Versioning): this client would misread another version's messages, and a first
    message that is no hello is another program's socket."""
    if message.get("class") == "error":  # `busy` comes instead of the hello
        # named, as every other connect error is: the daemon's own words ("too many
        # clients") do not say which daemon refused
        raise ClientError(str(message.get("code")), f"{path}: {message.get('message')}")
    if message.get("class") != "hello":
        raise ClientError("protocol", f"{path} did not begin with a hello: "
                                      f"{json.dumps(message)[:64]}")
    proto = message.get("proto")
    if type(proto) is not int or proto != PROTO:  # not ==: True == 1
        raise ClientError("protocol", f"{path} speaks protocol version {json.dumps(proto)}; "
                                      f"this client speaks version {PROTO}")
    return message


def exit_status(returncode: int) -> str:
    """A Popen returncode for people: `78`, or `-9 (SIGKILL)` for a signal (the daemons
    the demo and the benchmarks start and talk to)."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"{returncode} ({signal.Signals(-returncode).name})"
    return str(returncode)
