"""The socket's framing and errors, over real AF_UNIX connections to the real daemon."""

from __future__ import annotations

import json
import socket
from typing import Any, Callable

import pytest

from tests.conftest import DaemonProcess
from wattgate.client import Client

StartDaemon = Callable[..., DaemonProcess]


class RawClient:
    """Bytes in, JSON lines out: lets a test send what the Python client never would."""

    def __init__(self, path: str, rcvbuf: int = 0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10.0)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> dict[str, Any]:
        line = self.file.readline()
        assert line, "connection closed"
        message: dict[str, Any] = json.loads(line)
        return message

    def answer(self) -> dict[str, Any]:
        """The next message that is not a result (replies and errors)."""
        while True:
            message = self.read()
            if message["class"] not in ("result", "event"):
                return message

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_hello_comes_first_and_ids_are_echoed(daemon: DaemonProcess) -> None:
    raw = RawClient(str(daemon.socket))
    hello = raw.read()
    assert hello["class"] == "hello" and hello["proto"] == 1
    raw.send(b'{"cmd":"status","id":"abc"}\n{"cmd":"status","id":[1,2]}\n{"cmd":"status"}\n')
    first, second, third = raw.answer(), raw.answer(), raw.answer()
    assert (first["class"], first["id"]) == ("status", "abc")
    assert second["id"] == [1, 2]
    assert "id" not in third
    raw.close()


@pytest.mark.parametrize(
    ("line", "code", "needle"),
    [
        (b"\xff\xfe{}\n", "bad_json", "UTF-8"),
        (b"{not json\n", "bad_json", "JSON"),
        (b"[1, 2]\n", "bad_request", "object"),
        (b'{"id": 4}\n', "bad_request", "cmd"),
        (b'{"cmd": "dance", "id": 5}\n', "unknown_cmd", "dance"),
        (b'{"cmd": "status", "verbose": true}\n', "bad_request", "verbose"),
        (b'{"cmd": "subscribe", "topics": "results"}\n', "bad_request", "topics"),
        (b'{"cmd": "subscribe", "topics": ["cats"]}\n', "bad_request", "cats"),
    ],
)
def test_bad_requests_get_errors_and_the_connection_stays_usable(
    daemon: DaemonProcess, line: bytes, code: str, needle: str
) -> None:
    raw = RawClient(str(daemon.socket))
    raw.read()
    raw.send(line)
    error = raw.answer()
    assert error["class"] == "error"
    assert error["code"] == code
    assert needle in error["message"]
    raw.send(b'{"cmd":"status","id":1}\n')
    assert raw.answer()["class"] == "status"
    raw.close()


def test_oversized_line_is_refused_then_closed(daemon: DaemonProcess) -> None:
    raw = RawClient(str(daemon.socket))
    raw.read()
    raw.send(b'{"cmd":"status","pad":"' + b"x" * (70 * 1024) + b'"}\n')
    error = raw.answer()
    assert (error["class"], error["code"]) == ("error", "too_large")
    assert raw.file.readline() == b""  # closed
    raw.close()
    other = RawClient(str(daemon.socket))
    assert other.read()["class"] == "hello"
    other.close()


def test_a_line_far_over_the_limit_is_sent_whole_then_answered_and_ended_not_reset(
    daemon: DaemonProcess,
) -> None:
    """A client that sends a line several socket buffers long (a large image, as a shell
    client would) sends all of it, then reads the error and the end of the stream. Closed
    with the rest of the line unread, the daemon reset the connection: the client's send
    failed part way, or its read failed with ECONNRESET after the error."""
    raw = RawClient(str(daemon.socket))
    assert raw.read()["class"] == "hello"
    raw.send(b'{"cmd":"infer","image":"' + b"A" * (400 * 1024) + b'"}\n')
    error = raw.read()
    assert (error["class"], error["code"], "id" in error) == ("error", "too_large", False)
    assert raw.file.readline() == b""  # the end of the stream, sent after the error
    raw.close()
    with Client(str(daemon.socket)) as other:
        assert other.request("status")["class"] == "status"


def test_a_stalled_subscriber_loses_oldest_results_and_is_told(
    start_daemon: StartDaemon,
) -> None:
    proc = start_daemon(
        gate={"enabled": False}, camera={"realtime": False}, daemon={"client_queue": 8}
    )
    proc.connect().close()
    stalled = RawClient(str(proc.socket), rcvbuf=4096)
    stalled.read()
    stalled.send(b'{"cmd":"subscribe","topics":["results"],"id":1}\n')
    watcher = RawClient(str(proc.socket))
    watcher.read()
    watcher.send(b'{"cmd":"subscribe","topics":["results"],"id":1}\n')
    # The healthy client keeps receiving while the stalled one reads nothing, for more
    # results than the kernel's socket buffer (about 600 of these) and the queue can hold.
    first = last = next(m for m in iter(watcher.read, None) if m["class"] == "result")["seq"]
    while last < first + 2500:
        message = watcher.read()
        if message["class"] == "result":
            assert message["seq"] == last + 1  # the healthy client lost nothing
            last = message["seq"]
    overflow = None
    before = None  # the last result that was already on its way before the drops
    for _ in range(2500):
        message = stalled.read()
        if message["class"] == "overflow":
            overflow = message
            break
        if message["class"] == "result":
            assert before is None or message["seq"] == before + 1
            before = message["seq"]
    assert overflow is not None and overflow["dropped"] > 0
    # After the overflow notice the stalled client gets the newest results again, and the
    # notice counts exactly the results it did not get (results travel in batches).
    after = next(m for m in iter(stalled.read, None) if m["class"] == "result")
    assert after["seq"] > first + 2000
    assert before is not None and after["seq"] - before - 1 == overflow["dropped"]
    stalled.close()
    watcher.close()
    assert proc.stop() == 0


def test_a_wide_fan_out_gets_every_result_in_order(start_daemon: StartDaemon) -> None:
    """From 32 result subscribers on, results are sent in batches (daemon/handoff.py): each
    subscriber still gets every result, in order, as one line each."""
    proc = start_daemon(
        gate={"enabled": False}, camera={"realtime": False}, daemon={"max_clients": 64}
    )
    proc.connect().close()
    clients = [RawClient(str(proc.socket)) for _ in range(40)]
    for client in clients:
        assert client.read()["class"] == "hello"
        client.send(b'{"cmd":"subscribe","topics":["results"],"id":1}\n')
    for client in clients:
        assert client.answer()["class"] == "reply"
    seqs: list[list[int]] = [[] for _ in clients]
    while min(map(len, seqs)) < 200:  # the file is read as fast as the model goes
        for client, got in zip(clients, seqs):
            if len(got) < 200:
                message = client.read()
                assert message["class"] == "result", message
                got.append(message["seq"])
    for got in seqs:
        assert got == list(range(got[0], got[0] + len(got)))
    for client in clients:
        client.close()
    assert proc.stop() == 0
