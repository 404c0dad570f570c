"""The Unix socket server: newline-delimited JSON, the server speaks first (gpsd style).

Framing and errors live here; what each command does is the daemon's (`handlers`).
A bad request gets an `error` message and the connection stays usable; only a line
over the limit closes it, since the rest of that line cannot be framed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import json
import logging
import math
import os
import platform
import re
import reprlib
import select
import socket
import stat
import struct
import weakref
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

from wattgate.config import DaemonConfig
from wattgate.daemon.hub import (
    CLOSE_GRACE_S,
    MAX_LINE,
    ClientSession,
    Hub,
    Message,
    encode,
    line_within,
    strict_line,
)
from wattgate.daemon.pathcheck import (
    PathError,
    expect_directory_for,
    kind_of,
    whose,
)

log = logging.getLogger("wattgate.server")

MAX_BACKLOG = 256 * 1024  # bytes of answers waiting for a client before its requests wait
FLOOD_GRACE_S = 5.0  # and how long it has to read them before it is cut off
ECHO_CHARS = 64  # how much of what a client sent an error message repeats
# An error message the daemon makes is cut to this (a refused reload's problems quote the
# config's values): with room left for an id, and however JSON escapes it, it fits a line.
ERROR_CHARS = 8192
# Clients told busy that are read until they close, at most (the others are closed at once)
MAX_REFUSING = 64
# Commands that only wait for something and change nothing: one whose client hung up is
# given up (a snap waits up to a minute for a frame; its client's place among
# daemon.max_clients was held all that time). Control commands always run to their end.
ABANDONED_WITH_CLIENT = frozenset({"snap"})
HANGUP_CHECK_S = 1.0  # how often a client whose such command is waiting is looked at
STOPPING = "the daemon is stopping"  # why a request the daemon could not finish is unavailable
# Turns of the loop close() gives connections asyncio has accepted to reach _serve (three
# in CPython 3.11: the transport is made, connection_made starts the task, the task runs)
MAX_ARRIVAL_TURNS = 100
MAX_FAILURES_KEPT = 1000  # distinct command failures remembered as already logged
# bytes of a line a reply needs besides its id: a longer id is refused before the request
# runs, so a profile set or a reload is never done and then answered too_large
ID_ROOM = 4096
# An id nested deeper is refused: Python parses a little deeper than it can write back, and
# where between the two a given id falls would depend on the stack the answer is made on.
MAX_ID_DEPTH = 32
# Linux 4.13+; Python does not name it. 59 on every architecture but parisc and sparc.
SO_PEERGROUPS: Optional[int] = getattr(
    socket, "SO_PEERGROUPS", None if platform.machine().startswith(("parisc", "sparc")) else 59
)
# A \u escape of a UTF-16 surrogate: paired it is one character, alone it is not Unicode.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class ProtocolError(Exception):
    """A request that gets an `error` reply; code is one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PeerCreds:
    pid: int
    uid: int
    gid: int
    groups: Optional[tuple[int, ...]] = None  # supplementary groups; None: not known

    def __str__(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"


Handler = Callable[[ClientSession, Message], Awaitable[Message]]


def peer_creds(sock: Optional[socket.socket]) -> Optional[PeerCreds]:
    """SO_PEERCRED of a connected AF_UNIX socket: who is on the other end."""
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCreds(pid, uid, gid, peer_groups(sock))


def peer_groups(sock: socket.socket) -> Optional[tuple[int, ...]]:
    """SO_PEERGROUPS: the peer's supplementary groups when it connected, or None.

    Taken by the kernel with SO_PEERCRED, so they belong to the process that connected
    even if it has gone since, and they need no look into /proc (which ProtectProc=
    hides from the daemon). Python reads at most 1024 bytes of an option: a peer in more
    than 256 groups gets ERANGE, and None.
    """
    if SO_PEERGROUPS is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
    except OSError:
        return None
    return struct.unpack(f"{len(raw) // 4}I", raw)


class _NotJSON(ValueError):
    """A value json.loads would take that is not JSON: NaN, Infinity, 1e400."""


def _no_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON(f"number {echo(text)} is out of range")
    return value


def decode_line(line: bytes) -> Any:
    """One request line as a JSON value, strictly.

    Python's json takes NaN and Infinity (and reads 1e400 as infinity); the daemon would
    echo them in an `id`, and strict parsers (Go, most C libraries) refuse them. Too
    deep nesting and integers of more digits than Python converts are a client's input
    too: they are bad_json like any other, not an internal error with a traceback. So are
    lone surrogate escapes: they are not Unicode and cannot be written back as UTF-8.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad_json", f"request is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
        if SURROGATE_ESCAPE.search(text):
            json.dumps(value, ensure_ascii=False).encode()
    except json.JSONDecodeError as exc:
        reason = exc.msg
    except _NotJSON as exc:
        reason = str(exc)
    except UnicodeEncodeError:
        reason = "a \\u escape is half a surrogate pair, not a character"
    except RecursionError:
        reason = "nested too deeply"
    except ValueError:  # int(): more digits than sys.get_int_max_str_digits()
        reason = "an integer has too many digits"
    else:
        return value
    raise ProtocolError("bad_json", f"request is not valid JSON: {reason}")


def check_request(value: Any) -> Message:
    """A decoded request: a JSON object with a string `cmd`."""
    if not isinstance(value, dict):
        raise ProtocolError("bad_request", "request must be a JSON object")
    if not isinstance(value.get("cmd"), str):
        raise ProtocolError("bad_request", "field 'cmd' must be a string")
    return value


def parse_request(line: bytes) -> Message:
    """Decode one request line into a JSON object with a string `cmd`."""
    return check_request(decode_line(line))


def echo(value: Any) -> str:
    """value's repr for an error message, cut to ECHO_CHARS: a message that repeated all
    a client sent could outgrow the line limit (repr and JSON escaping make it longer)."""
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…"


class SocketPathError(OSError):
    """daemon.socket cannot be bound as the daemon's own on this machine: something there
    that is not a stale socket (a file, another program's socket, a daemon listening), or
    a directory it cannot be made in. Its text names daemon.socket, the path and what is
    wrong. `run` exits 69 on it: a restart would meet the same refusal."""

    def __str__(self) -> str:
        return f"daemon.socket {self.filename}: {self.strerror}"


def bind_socket(cfg: DaemonConfig) -> socket.socket:
    """Bind daemon.socket with its mode and group, replacing a stale socket file.

    A socket file that still answers belongs to a running daemon: refuse to steal it.
    Anything else than a socket there is not ours to delete (a daemon.socket mistyped as the
    config file's path would have removed the config): refuse that too.
    """
    path = cfg.socket
    directory, found = check_socket_path(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise SocketPathError(exc.errno, f"cannot make {directory}: {exc.strerror}",
                              path) from None
    if found is not None:
        _replace_stale(path, found)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # a security module's no
            raise SocketPathError(exc.errno, f"cannot bind: {exc.strerror}", path) from None
        raise
    os.chmod(path, cfg.socket_mode)
    if cfg.socket_group:
        try:
            os.chown(path, -1, grp.getgrnam(cfg.socket_group).gr_gid)
        except (KeyError, PermissionError) as exc:
            log.warning("daemon.socket_group %r not applied: %s", cfg.socket_group, exc)
    sock.listen(128)
    return sock


def check_socket_path(path: str) -> tuple[str, Optional[os.stat_result]]:
    """check_socket_directory's directory, and the socket file already at path (live or
    stale: bind_socket looks) or None; SocketPathError for anything else there, which is
    not ours to replace. Nothing is made or changed: `wattgate check-config` checks with it
    too, so that it does not say "ok" for a config whose `run` then refuses the path."""
    directory = check_socket_directory(path)
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return directory, None
    except OSError as exc:
        raise SocketPathError(exc.errno, f"cannot look at it: {exc.strerror}", path) from None
    if not stat.S_ISSOCK(found.st_mode):
        raise SocketPathError(errno.EEXIST, f"there is a {kind_of(found.st_mode)} there, "
                              "not a socket; not replacing it", path)
    return directory, found


def check_socket_directory(path: str) -> str:
    """The directory the socket at path goes in; SocketPathError, naming daemon.socket,
    the path and what is wrong, unless that directory is one this process may make the
    socket in or, missing, may make (the nearest directory above it that is there is one it
    may write). Nothing is made or changed (check_socket_path, which check-config uses).

    Left to makedirs and bind, a parent that is a regular file said "[Errno 17] File
    exists", a directory this process may not write "[Errno 13] Permission denied", and
    neither named daemon.socket nor whose the directory is."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        expect_directory_for(directory, "the socket is made in it")
    except PathError as exc:
        raise SocketPathError(exc.errno, str(exc), path) from None
    except OSError as exc:
        raise SocketPathError(exc.errno, f"cannot look up {exc.filename}: {exc.strerror}",
                              path) from None
    return directory


def _replace_stale(path: str, found: os.stat_result) -> None:
    """Delete the socket file at path if it is stale: one nobody listens on any more, which
    a connect proves by ECONNREFUSED and nothing else does.

    A live datagram socket (a /dev/log, a NOTIFY_SOCKET) answers a stream connect with
    EPROTOTYPE, another user's socket this process may not write with EACCES, a listener
    whose backlog is full with EAGAIN: each was taken for stale and deleted, under the
    program using it. SocketPathError for those, with the file left as it is, and when a
    stream listener answers: another daemon is running there."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a full backlog is EAGAIN, not a wait for a free slot
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):  # gone meanwhile: as good as stale
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise SocketPathError(errno.EADDRINUSE, "another program is listening (its "
                                  "backlog is full); not replacing it", path) from None
        if exc.errno == errno.EPROTOTYPE:
            what = "a datagram socket someone is listening on (another program's)"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            what = (f"a socket {whose(found)} may not connect to, so whether it is live "
                    "cannot be told")
        else:
            what = f"a socket a connect to it fails on ({exc.strerror})"
        raise SocketPathError(exc.errno, f"there is {what}; only a socket that refuses "
                              "connections is a stale one to replace: not replacing it",
                              path) from None
    else:
        raise SocketPathError(errno.EADDRINUSE, "another daemon is listening", path)
    finally:
        probe.close()


def _note_inherited(path: Any, cfg: DaemonConfig) -> None:
    """Say, at start, that the socket systemd passed is served, and where it is not what
    daemon.socket, socket_mode and socket_group ask: the unit's ListenStream=, SocketMode=
    and SocketGroup= decide it. Without a word, a socket_group or a path set in the config
    did nothing, and `wattgate status --config` looked for a daemon at the config's path."""
    if not isinstance(path, str) or not path.startswith("/"):  # abstract or unnamed
        log.info("serving the socket systemd passed (%r); daemon.socket, socket_mode and "
                 "socket_group do not apply to it", path)
        return
    log.info("serving the socket systemd passed, %s", path)
    differs = []
    if os.path.abspath(cfg.socket) != path:
        differs.append(f"daemon.socket is {cfg.socket} (clients given this config look there)")
    try:
        found = os.stat(path)
    except OSError:
        found = None
    if found is not None and stat.S_IMODE(found.st_mode) != cfg.socket_mode:
        differs.append(f"its mode is {stat.S_IMODE(found.st_mode):04o}, daemon.socket_mode "
                       f"{cfg.socket_mode:04o}")
    if found is not None and cfg.socket_group:
        try:
            wanted: Optional[int] = grp.getgrnam(cfg.socket_group).gr_gid
        except KeyError:
            wanted = None
        if wanted != found.st_gid:
            differs.append(f"its group is gid {found.st_gid}, daemon.socket_group "
                           f"{cfg.socket_group}")
    if differs:
        log.warning("the socket systemd passed is not the config's: %s; the unit's "
                    "ListenStream=, SocketMode= and SocketGroup= decide it, set them alike",
                    "; ".join(differs))


class Server:
    def __init__(
        self,
        cfg: DaemonConfig,
        hub: Hub,
        handlers: Mapping[str, Handler],
        hello: Callable[[], Message],
    ) -> None:
        self.cfg = cfg
        self.hub = hub
        self.handlers = handlers
        self.hello = hello
        self.path: Optional[str] = None
        self._server: Optional[asyncio.Server] = None
        self._owns_path = False
        self._inode = 0  # of the socket file we bound
        self._connections: set[asyncio.Task[Any]] = set()  # each connection's reader
        # readers of connections asyncio has accepted whose _serve has not started yet
        self._arriving: weakref.WeakSet[asyncio.StreamReader] = weakref.WeakSet()
        # connections made before the daemon was ready, waiting for their hello unread
        self._waiting: dict[ClientSession, asyncio.Task[Any]] = {}
        self._refusing = 0  # clients told busy, read until they close
        # Clients gone from the hub whose answers are still being written (CLOSE_GRACE_S
        # at most): they keep their places, see _places_taken.
        self._flushing: set[ClientSession] = set()
        self._closing = False
        self._ready = asyncio.Event()
        self._failures: set[tuple[str, str]] = set()  # (cmd, error) already logged in full

    async def start(self, inherited: Optional[socket.socket] = None) -> None:
        """Serve on a socket systemd passed us, or bind daemon.socket ourselves."""
        sock = inherited if inherited is not None else bind_socket(self.cfg)
        self._owns_path = inherited is None
        self.path = sock.getsockname() or self.cfg.socket
        if inherited is not None:
            _note_inherited(self.path, self.cfg)
        if self._owns_path:
            self._inode = os.stat(self.path).st_ino
        self._server = await asyncio.get_running_loop().create_unix_server(
            self._protocol, sock=sock
        )

    def _protocol(self) -> asyncio.StreamReaderProtocol:
        """What asyncio.start_unix_server makes for each connection, with its reader
        noted as arriving until its _serve starts."""
        # The limit is on where the newline is: MAX_LINE - 1 makes MAX_LINE the most bytes
        # a line may have with its newline.
        reader = asyncio.StreamReader(limit=MAX_LINE - 1)
        self._arriving.add(reader)
        return asyncio.StreamReaderProtocol(reader, self._serve)

    def set_ready(self) -> None:
        """Clients that connected early get their hello once the daemon is ready."""
        self._ready.set()

    async def close(self) -> None:
        """Stop serving: a request still running is answered unavailable (STOPPING), then
        each client has what is queued for it written before its connection closes."""
        self._closing = True
        if self._server is not None:
            await self._stop_accepting(self._server)
        sessions = list(self.hub.sessions)
        # Readers still waiting (for the hello, a request, a command's answer) end first,
        # not when asyncio.run cancels whatever is left and logs each as an error.
        readers = list(self._connections)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for session in sessions:
            session.close()
        tasks = [s.task for s in sessions if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=0.5)
        if self._owns_path and self.path:
            with contextlib.suppress(OSError):
                # A daemon started meanwhile (a restart) may have bound the path anew:
                # its socket file is not ours to remove.
                if os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)

    async def _stop_accepting(self, server: asyncio.Server) -> None:
        """Accept no more connections, let those asyncio has accepted already reach
        _serve (which tells them the daemon is stopping), then close the listener.

        asyncio takes a few turns of the loop from accepting a connection to starting its
        _serve. Closed in those turns, the server failed to make the transport of one
        (an AssertionError, seen only in asyncio's debug mode) and left its socket to the
        garbage collector; another's _serve started after close() had looked, or never,
        and its client waited, with neither a hello nor the end of the stream, until the
        process exited."""
        loop = asyncio.get_running_loop()
        for listener in server.sockets:
            loop.remove_reader(listener.fileno())
        # One turn: the tasks of connections accepted already make their protocols (and
        # so join _arriving) in it. One whose transport failed leaves _arriving when its
        # reader is freed; MAX_ARRIVAL_TURNS bounds the wait for it until then.
        await asyncio.sleep(0)
        for _ in range(MAX_ARRIVAL_TURNS):
            if not self._arriving:
                break
            await asyncio.sleep(0)
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._arriving.discard(reader)
        if self._closing:  # accepted as close() began: told why, not left waiting
            writer.write(encode(_error("unavailable", STOPPING)))
            writer.close()  # once the error is written
            return
        creds = peer_creds(writer.get_extra_info("socket"))
        session = ClientSession(writer, self.cfg.client_queue, str(creds or "?"), creds)
        if self._places_taken() >= self.cfg.max_clients:
            self._forget_departed()
        task = asyncio.current_task()
        if self._places_taken() >= self.cfg.max_clients:
            if task is not None:
                self._connections.add(task)
            try:
                await self._refuse(reader, writer)
            finally:
                self._connections.discard(task)
            return
        self.hub.add(session)
        session.start()
        if task is not None:
            self._connections.add(task)
        try:
            if not self._ready.is_set() and task is not None:
                self._waiting[session] = task
                try:
                    await self._ready.wait()
                finally:
                    self._waiting.pop(session, None)
            session.reply_line(line_within(self.hello()))  # unasked: fitted, fields left out
            await self._read_requests(reader, session)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # close(): the daemon is stopping; or the peer left before its hello
        finally:
            self._connections.discard(task)
            self.hub.remove(session)
            session.close()
            self._hold_place_while_flushing(session)

    def _places_taken(self) -> int:
        """Connections that count against daemon.max_clients: the hub's, and those still
        writing what was queued for a client that hung up. Freed at the hang-up, a client
        that asked for large answers and closed its sending side, again and again, made
        the daemon hold any number of connections and their unsent answers."""
        return len(self.hub.sessions) + len(self._flushing)

    def _hold_place_while_flushing(self, session: ClientSession) -> None:
        task = session.task
        if task is None or task.done():
            return
        self._flushing.add(session)
        task.add_done_callback(lambda _: self._flushing.discard(session))

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """busy instead of the hello, then the end of the stream; what the client sends
        meanwhile is read and dropped until it closes, for CLOSE_GRACE_S at most.

        A socket closed with a request unread resets the connection: the client's read
        fails with ECONNRESET after the error, or its send fails before it reads the error
        at all. Beyond MAX_REFUSING at once (a connection flood) clients are closed at once."""
        writer.write(encode(_error("busy", "too many clients; try again later")))
        if self._refusing >= MAX_REFUSING:
            writer.close()  # once the error is written
            return
        self._refusing += 1
        try:
            writer.write_eof()
            await _drop_until_closed(reader)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            self._refusing -= 1
            writer.close()

    def _forget_departed(self) -> None:
        """Free the places of clients that hung up while waiting for their hello.

        Until the daemon is ready nothing is read, so a client that gave up and closed
        (a connect timeout shorter than the model's load) is not noticed, and would keep
        its place among max_clients until then. Looked at only when the places are all
        taken. A client that closed only its sending side is still waiting: it is owed
        its hello and the answers to what it sent."""
        for session, task in list(self._waiting.items()):
            if _hung_up(session.writer):
                self._waiting.pop(session)
                self.hub.remove(session)
                task.cancel()

    async def _read_requests(self, reader: asyncio.StreamReader, session: ClientSession) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # the line outgrew the stream limit
                session.reply(_error("too_large", f"request line over {MAX_LINE} bytes"))
                session.end_stream()  # then EOF; the rest of the line is read and dropped
                await _drop_until_closed(reader)
                return
            if not line:
                return
            if line.strip():
                session.reply_line(await self._dispatch(session, line))
            # Lines already buffered are read without a pause unless we make one: other
            # clients and the pipeline's results go in between, whatever one client sends
            # (empty lines too: a stream of them would hold the loop as long as it lasts).
            await asyncio.sleep(0)
            # Over MAX_BACKLOG, wait for the client to read: one that reads catches up at
            # once (to half of it, so it is not waited for at every request), one that does
            # not is a flood, and its answers would only pile up in memory.
            if session.unsent() > MAX_BACKLOG and not await session.caught_up(
                MAX_BACKLOG // 2, FLOOD_GRACE_S
            ):
                log.warning("closing %s: %d bytes of replies unread (request flood)",
                            session.peer, session.unsent())
                session.abort()  # it does not read: a parting error would never arrive
                return

    async def _dispatch(self, session: ClientSession, line: bytes) -> bytes:
        """The answer to one request line, encoded: a reply or an error, with the request's
        id."""
        request: Any = None
        try:
            request = decode_line(line)
            checked = check_request(request)
            _check_id_room(checked)
            if checked["cmd"] in ABANDONED_WITH_CLIENT:
                answer = await self._run_while_there(session, checked)
            else:
                answer = await self._run(session, checked)
        except asyncio.CancelledError:
            if self._closing:  # close(): the client still gets an answer
                session.reply_line(_answer_line(_with_id(_error("unavailable", STOPPING),
                                                         request)))
            raise
        except ProtocolError as exc:
            answer = _error(exc.code, exc.message)
        except _ClientGone:
            raise
        except Exception as exc:
            self._log_failure(request, exc)
            answer = _error("unavailable", "internal error; see the daemon's log")
        return _answer_line(_with_id(answer, request))

    def _log_failure(self, request: Any, exc: Exception) -> None:
        """A command's unforeseen error, with its traceback the first time only: a client
        that repeats a request that keeps failing (a damaged event log) would otherwise
        flood the journal with the same traceback."""
        cmd = request.get("cmd") if isinstance(request, dict) else None
        key = (reprlib.repr(cmd), f"{type(exc).__name__}: {exc}")
        if key in self._failures:
            log.debug("command %s failed again: %s", *key)
            return
        if len(self._failures) < MAX_FAILURES_KEPT:
            self._failures.add(key)
        log.exception("command %s failed (logged once; again at debug level)", key[0])

    async def _run_while_there(self, session: ClientSession, request: Message) -> Message:
        """_run, given up when the client closes its connection both ways meanwhile:
        nothing is read from a connection while its request runs, so its hang-up would
        go unseen until the answer. _ClientGone ends the connection then. A
        client that closed only its sending side still waits for the answer, and gets it."""
        work = asyncio.ensure_future(self._run(session, request))
        try:
            while not (await asyncio.wait((work,), timeout=HANGUP_CHECK_S))[0]:
                if _hung_up(session.writer):
                    log.debug("%s hung up during its %s: given up", session.peer,
                              request["cmd"])
                    raise _ClientGone(session.peer)
            return work.result()
        finally:
            work.cancel()

    async def _run(self, session: ClientSession, request: Message) -> Message:
        cmd = request["cmd"]
        handler = self.handlers.get(cmd)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            raise ProtocolError("unknown_cmd", f"unknown cmd {echo(cmd)}; known: {known}")
        fields = await handler(session, request)
        return {"class": "reply", "cmd": cmd, **fields}


UNRETRIEVED = "Future exception was never retrieved"  # asyncio's Future.__del__ report


def quiet_departures(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: a client connection that ended in an error
    nobody waited for is logged at DEBUG, not as an ERROR with a traceback.

    asyncio's streams keep how a connection ended (a BrokenPipeError when the client left
    while being written to) in a future that only StreamWriter.wait_closed() reads. A
    connection dropped without that wait (its write failed, or the daemon stopped first)
    had it reported when the future was collected: "Future exception was never
    retrieved", an ERROR and a traceback in the journal for a client that hung up.
    Everything else goes to asyncio's default handler."""
    exc = context.get("exception")
    if context.get("message") == UNRETRIEVED and isinstance(exc, ConnectionError):
        log.debug("a client connection ended: %s", exc)
        return
    loop.default_exception_handler(context)


class _ClientGone(ConnectionError):
    """The client hung up while its request waited: the connection ends, unanswered."""


async def _drop_until_closed(reader: asyncio.StreamReader) -> None:
    """Read and drop what the peer sends until it closes, for CLOSE_GRACE_S at most: a
    socket closed with data unread resets the connection under the client."""
    async def read_to_end() -> None:
        while await reader.read(MAX_LINE):
            pass

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(read_to_end(), CLOSE_GRACE_S)


def _hung_up(writer: asyncio.StreamWriter) -> bool:
    """Whether the peer of a connection has closed it both ways (POLLHUP), which a peer
    that only shut down its sending side has not."""
    sock = writer.get_extra_info("socket")
    if sock is None or sock.fileno() < 0:  # the transport has closed it already
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLHUP)
    return any(mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
               for _, mask in poller.poll(0))


def _with_id(answer: Message, request: Any) -> Message:
    """answer carrying the request's id, exactly when the request is an object with an
    `id` key (null included): clients match answers by id, whatever went wrong."""
    if not isinstance(request, dict) or "id" not in request:
        return answer
    if _depth(request["id"]) > MAX_ID_DEPTH:  # refused by _check_id_room: never sent
        return answer
    return {"class": answer["class"], "id": request["id"], **answer}


def _check_id_room(request: Message) -> None:
    """too_large, before anything runs, for an id that would leave a reply no room."""
    if "id" not in request:
        return
    if _depth(request["id"]) > MAX_ID_DEPTH:
        raise ProtocolError("bad_request", f"the id is nested more than {MAX_ID_DEPTH} levels "
                            "deep (answered without it); the request was not run")
    size = id_bytes(request)
    if size > MAX_LINE - ID_ROOM:
        raise ProtocolError(
            "too_large", f"an id of {size} bytes leaves its answer no room in a {MAX_LINE}-byte "
            f"line (ids up to {MAX_LINE - ID_ROOM} bytes); the request was not run")


def id_bytes(request: Message) -> int:
    """What the request's id takes of its answer's line (`{"id":ID}` and a newline), 0
    without one, all of it (MAX_LINE) for an id that cannot be written back."""
    if "id" not in request:
        return 0
    line = strict_line({"id": request["id"]})
    return MAX_LINE if line is None else len(line)


def check_answer_fits(request: Message, fields: Message) -> None:
    """too_large now, before a command changes anything, if its answer (which echoes what
    the client sent) would not fit a line: done and then answered too_large, a command
    would look refused."""
    line = strict_line(_with_id({"class": "reply", "cmd": request["cmd"], **fields}, request))
    if line is not None and len(line) > MAX_LINE:
        raise ProtocolError("too_large", f"the answer would be {len(line)} bytes, over the "
                            f"{MAX_LINE}-byte line limit; nothing was changed")


def _depth(value: Any) -> int:
    """How many arrays and objects deep value nests (0 for a scalar), without recursion."""
    deepest, level = 0, [(value, 1)]
    while level:
        item, depth = level.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            level.extend((child, depth + 1) for child in children)
    return deepest


def _answer_line(answer: Message) -> bytes:
    """answer's line, or that of the error that goes instead when it is not strict JSON or
    its line would be over MAX_LINE (an echoed id or filter of nearly a line). That error
    keeps the id only if it still fits: an id that does not fit in a line cannot come back.
    Encoded once here, to measure it, and sent as it is."""
    line = strict_line(answer)
    if line is not None and len(line) <= MAX_LINE:
        return line
    if line is None:
        log.error("answer not sent, it cannot be written as JSON: %s", reprlib.repr(answer))
        error = _error("unavailable", "internal error; see the daemon's log")
    elif answer.get("class") == "error":  # the error itself, its message cut (a config's
        # problems quoting a long value), not a too_large that hides what was refused
        message = str(answer.get("message", ""))
        error = _error(str(answer.get("code")), message if len(message) <= ERROR_CHARS
                       else message[:ERROR_CHARS] + f"… ({len(message)} characters, cut)")
    else:
        error = _error("too_large", f"the answer would be {len(line)} bytes, over the "
                       f"{MAX_LINE}-byte line limit")
    with_id = strict_line(_with_id(error, answer))
    if with_id is not None and len(with_id) <= MAX_LINE:
        return with_id
    if "id" in answer:
        error["message"] += "; the request's id cannot come back in a line either"
    return encode(error)


def _error(code: str, message: str) -> Message:
    return {"class": "error", "code": code, "message": message}


def check_fields(request: Message, allowed: set[str]) -> None:
    """Unknown fields are errors, so a typo in a client is caught, not ignored."""
    extra = sorted(set(request) - allowed - {"cmd", "id"})
    if extra:
        raise ProtocolError("bad_request", f"unknown field(s) for {request['cmd']}: {echo(extra)}")
