"""Abuse: fuzzed requests, floods and connection churn leave the daemon serving and lean."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DaemonProcess
from wattgate.config import DaemonConfig
from wattgate.daemon.eventlog import EventLog
from wattgate.daemon.hub import Hub
from wattgate.daemon.server import MAX_BACKLOG, ProtocolError, Server, parse_request

StartDaemon = Callable[..., DaemonProcess]

ERROR_CODES = {"bad_json", "bad_request", "unknown_cmd", "forbidden", "too_large", "busy",
               "unavailable"}

# JSON's values: no NaN or infinity, which are bad_json (tests/test_requests.py).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.binary(max_size=300))
def test_parser_never_raises_anything_but_a_protocol_error(raw: bytes) -> None:
    try:
        request = parse_request(raw)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES
    else:
        assert isinstance(request, dict) and isinstance(request["cmd"], str)


@given(json_values)
def test_parser_accepts_exactly_objects_with_a_string_cmd(value: Any) -> None:
    line = json.dumps(value).encode()
    ok = isinstance(value, dict) and isinstance(value.get("cmd"), str)
    try:
        assert parse_request(line) == value
    except ProtocolError as exc:
        assert not ok
        assert exc.code == "bad_request"
    else:
        assert ok


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    from tests.conftest import write_config

    run = tmp_path_factory.mktemp("abuse")
    config = write_config(run / "config.toml", run, camera={"source": "synthetic:empty"})
    daemon = DaemonProcess(config, run / "wattgate.sock", run / "daemon.log")
    daemon.connect().close()
    yield daemon
    assert daemon.stop() == 0


commands = st.fixed_dictionaries(
    {"cmd": st.sampled_from(["status", "subscribe", "unsubscribe", "events", "infer",
                             "profile", "reload", "snap", "nope"])},
    optional={
        "id": json_values,
        "topics": json_values,
        "since": json_values,
        "limit": json_values,
        "image": json_values,
        "set": json_values,
        "timeout_ms": st.integers(-5, 50),
        "min_score": json_values,
        "labels": json_values,
        "extra": json_values,
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(commands)
def test_fuzzed_requests_on_a_real_socket_get_one_answer_each(
    shared_daemon: DaemonProcess, request_: dict[str, Any]
) -> None:
    if request_["cmd"] == "reload":
        request_.pop("set", None)
    with shared_daemon.connect() as client:
        client.settimeout(15)
        client.send(request_)
        answer = next(m for m in client.messages() if m["class"] not in ("result", "event"))
        assert answer["class"] in ("reply", "error", "status")
        if answer["class"] == "error":
            assert answer["code"] in ERROR_CODES
            assert answer["message"]
        if "id" in request_:
            assert answer.get("id") == request_["id"]
        # The connection is still usable after whatever that was.
        assert client.request("status")["class"] == "status"


def test_a_flooding_client_is_cut_off_and_others_are_served(
    shared_daemon: DaemonProcess,
) -> None:
    flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flood.connect(str(shared_daemon.socket))
    stop = threading.Event()

    def pour() -> None:
        line = b'{"cmd":"status","id":1}\n' * 256
        try:
            while not stop.is_set():
                flood.sendall(line)
        except OSError:
            pass  # cut off, as it should be

    pourer = threading.Thread(target=pour, daemon=True)
    pourer.start()
    try:
        for _ in range(20):
            with shared_daemon.connect() as other:
                assert other.request("status")["class"] == "status"
        pourer.join(timeout=60)
        assert not pourer.is_alive(), "the flooding client was never cut off"
    finally:
        stop.set()
        flood.close()
    assert "request flood" in shared_daemon.log()


def test_a_flood_of_large_answers_is_cut_off_before_they_fill_memory(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """Requests whose answers are ~60 KiB each (a page of 1000 events), sent all at once
    and never read: the daemon reads no further once MAX_BACKLOG bytes wait, instead of
    answering every request already buffered into memory, and cuts the client off. Another
    client is answered meanwhile."""
    state = tmp_path / "state"
    events = EventLog(str(state / "events.db"))
    now = time.time()
    for i in range(1000):
        events.append("detection", now - 10 + i * 1e-3, labels=["face"], frame=i, score=0.9)
    events.close(now)
    daemon = start_daemon(daemon={"state_dir": str(state)})
    proc = psutil.Process(daemon.proc.pid)
    with daemon.connect() as client:
        page = client.request("events", since=0, limit=1000)
        assert len(json.dumps(page)) > 40_000
        rss = proc.memory_info().rss
    request = b'{"cmd":"events","since":0,"limit":1000}\n'
    count = 20_000  # 1.2 GB of answers; 800 kB of requests, more than socket buffers hold
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as flood:
        flood.connect(str(daemon.socket))
        flood.setblocking(False)
        data, sent, peak = request * count, 0, rss
        deadline = time.monotonic() + 60
        while "request flood" not in daemon.log():
            assert time.monotonic() < deadline, "the flooding client was never cut off"
            with contextlib.suppress(BlockingIOError):
                sent += flood.send(data[sent : sent + 65536])
            with daemon.connect() as other:
                assert other.request("status")["class"] == "status"
            peak = max(peak, proc.memory_info().rss)
    assert sent < len(data), "every request was read: nothing waited for the answers"
    growth_mb = (peak - rss) / 2**20
    # the socket's buffers, MAX_BACKLOG and one answer over it, and a page being encoded
    assert growth_mb < 16 + 4 * MAX_BACKLOG / 2**20, f"RSS grew {growth_mb:.0f} MB"
    assert daemon.stop() == 0


def test_many_requests_in_one_write_are_all_answered_to_a_client_that_reads(
    shared_daemon: DaemonProcess,
) -> None:
    """5000 requests in one write (a shell loop piped through socat): over the backlog
    limit, but the client reads, so it is served, not taken for a flood."""
    count = 5000
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30.0)
        sock.connect(str(shared_daemon.socket))
        lines = sock.makefile("rb")
        assert json.loads(lines.readline())["class"] == "hello"
        requests = b"".join(b'{"cmd":"unsubscribe","id":%d}\n' % i for i in range(count))
        sender = threading.Thread(target=sock.sendall, args=(requests,), daemon=True)
        sender.start()
        ids = [json.loads(lines.readline())["id"] for _ in range(count)]
        sender.join()
    assert ids == list(range(count))


def test_connection_churn_returns_fds_and_memory_to_baseline(
    shared_daemon: DaemonProcess,
) -> None:
    proc = psutil.Process(shared_daemon.proc.pid)

    def churn(cycles: int) -> None:
        for i in range(cycles):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(shared_daemon.socket))
            if i % 3 == 0:
                sock.sendall(b'{"cmd":"status"}\n')
            if i % 3 == 1:
                sock.recv(4096)
            sock.close()

    def fd_targets() -> list[str]:
        fd_dir = f"/proc/{proc.pid}/fd"
        links = sorted(os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir))
        return [link if not link.startswith("socket:") else "socket" for link in links]

    def settled_fds() -> list[str]:
        """The daemon's fds once only our client is connected and closing ones are gone."""
        with shared_daemon.connect() as client:
            previous: list[str] = []
            for _ in range(100):
                if client.request("status")["clients"] == 1:
                    current = fd_targets()
                    if current == previous:
                        return current
                    previous = current
                time.sleep(0.05)
        raise AssertionError("the daemon's connections never settled")

    churn(200)  # warm up allocator pools and caches
    fds, rss = settled_fds(), proc.memory_info().rss
    churn(1000)
    assert settled_fds() == fds
    growth_mb = (proc.memory_info().rss - rss) / 2**20
    assert growth_mb < 2.0, f"RSS grew {growth_mb:.2f} MB over 1000 connections"
    assert os.path.exists(shared_daemon.socket)


def test_a_stream_of_empty_lines_takes_turns_with_the_rest_of_the_daemon(
    tmp_path: Path,
) -> None:
    """Empty lines are skipped, but each is a turn like a request: 50 000 of them in one
    write were read in one go, holding the event loop (results, other clients) for as long
    as that took. A real Server on a real socket, in this process, so that the loop's turns
    can be counted: a task that takes 1000 turns must finish before the request after the
    empty lines is run."""
    order: list[str] = []

    async def mark(session: Any, request: dict[str, Any]) -> dict[str, Any]:
        order.append("request")
        return {}

    async def other_work() -> None:
        for _ in range(1000):
            await asyncio.sleep(0)
        order.append("other work")

    async def run() -> None:
        cfg = DaemonConfig(socket=str(tmp_path / "turns.sock"))
        server = Server(cfg, Hub(), {"mark": mark}, lambda: {"class": "hello"})
        await server.start()
        server.set_ready()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(tmp_path / "turns.sock"))
            while not server.hub.sessions:
                await asyncio.sleep(0.01)
            sock.sendall(b"\n" * 50_000 + b'{"cmd":"mark"}\n')
            await asyncio.gather(other_work(), asyncio.wait_for(answered(), 60))
        await server.close()

    async def answered() -> None:
        while "request" not in order:
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert order == ["other work", "request"]
