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
import os
import platform
import socket
import struct
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

from wattgate.config import DaemonConfig
from wattgate.daemon.hub import ClientSession, Hub, Message, encode

log = logging.getLogger("wattgate.server")

MAX_LINE = 64 * 1024  # protocol limit on one request line, newline included
MAX_BACKLOG = 1024  # unanswered replies before a client that sends but never reads is cut off
# Linux 4.13+; Python does not name it. 59 on every architecture but parisc and sparc.
SO_PEERGROUPS: Optional[int] = getattr(
    socket, "SO_PEERGROUPS", None if platform.machine().startswith(("parisc", "sparc")) else 59
)


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


def parse_request(line: bytes) -> Message:
    """Decode one request line into a JSON object with a string `cmd`."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad_json", f"request is not valid UTF-8 (byte {exc.start})") from None
    try:
        request = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"request is not valid JSON: {exc.msg}") from None
    if not isinstance(request, dict):
        raise ProtocolError("bad_request", "request must be a JSON object")
    cmd = request.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError("bad_request", "field 'cmd' must be a string")
    return request


def bind_socket(cfg: DaemonConfig) -> socket.socket:
    """Bind daemon.socket with its mode and group, replacing a stale socket file.

    A socket file that still answers belongs to a running daemon: refuse to steal it.
    """
    path = cfg.socket
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            raise OSError(errno.EADDRINUSE, f"daemon.socket {path}: another daemon is listening")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, cfg.socket_mode)
    if cfg.socket_group:
        try:
            os.chown(path, -1, grp.getgrnam(cfg.socket_group).gr_gid)
        except (KeyError, PermissionError) as exc:
            log.warning("daemon.socket_group %r not applied: %s", cfg.socket_group, exc)
    sock.listen(128)
    return sock


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
        self._server: Optional[asyncio.AbstractServer] = None
        self._owns_path = False
        self._ready = asyncio.Event()

    async def start(self, inherited: Optional[socket.socket] = None) -> None:
        """Serve on a socket systemd passed us, or bind daemon.socket ourselves."""
        sock = inherited if inherited is not None else bind_socket(self.cfg)
        self._owns_path = inherited is None
        self.path = sock.getsockname() or self.cfg.socket
        self._server = await asyncio.start_unix_server(
            self._serve, sock=sock, limit=MAX_LINE
        )

    def set_ready(self) -> None:
        """Clients that connected early get their hello once the daemon is ready."""
        self._ready.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.hub.sessions):
            session.close()
        tasks = [s.task for s in self.hub.sessions if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=0.5)
        if self._owns_path and self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        creds = peer_creds(writer.get_extra_info("socket"))
        session = ClientSession(writer, self.cfg.client_queue, str(creds or "?"), creds)
        if len(self.hub.sessions) >= self.cfg.max_clients:
            writer.write(encode(_error("busy", "too many clients; try again later")))
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            writer.close()
            return
        self.hub.add(session)
        session.start()
        try:
            await self._ready.wait()
            session.reply(self.hello())
            await self._read_requests(reader, session)
        except (ConnectionError, OSError):
            pass
        finally:
            self.hub.remove(session)
            session.close()

    async def _read_requests(self, reader: asyncio.StreamReader, session: ClientSession) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # the line outgrew the stream limit
                session.reply(_error("too_large", f"request line over {MAX_LINE} bytes"))
                return
            if not line:
                return
            if not line.strip():
                continue
            session.reply(await self._dispatch(session, line))
            if session.backlog() > MAX_BACKLOG:
                log.warning("closing %s: %d replies unread (request flood)", session.peer,
                            session.backlog())
                session.abort()  # it does not read: a parting error would never arrive
                return

    async def _dispatch(self, session: ClientSession, line: bytes) -> Message:
        request_id: Any = None
        try:
            request = parse_request(line)
            request_id = request.get("id")
            handler = self.handlers.get(request["cmd"])
            if handler is None:
                known = ", ".join(sorted(self.handlers))
                unknown = f"unknown cmd {request['cmd']!r}; known: {known}"
                raise ProtocolError("unknown_cmd", unknown)
            fields = await handler(session, request)
            reply: Message = {"class": "reply", "cmd": request["cmd"]}
            if "id" in request:
                reply["id"] = request_id
            reply.update(fields)
            return reply
        except ProtocolError as exc:
            error = _error(exc.code, exc.message)
            if request_id is not None:
                error["id"] = request_id
            return error
        except Exception:
            log.exception("command failed")
            return _error("unavailable", "internal error; see the daemon's log")


def _error(code: str, message: str) -> Message:
    return {"class": "error", "code": code, "message": message}


def check_fields(request: Message, allowed: set[str]) -> None:
    """Unknown fields are errors, so a typo in a client is caught, not ignored."""
    extra = sorted(set(request) - allowed - {"cmd", "id"})
    if extra:
        raise ProtocolError("bad_request", f"unknown field(s) for {request['cmd']}: {extra}")
