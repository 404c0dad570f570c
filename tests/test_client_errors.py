"""How the Python client and the CLI fail: one clear ClientError or one stderr line, never a
traceback, a hang or a refusal taken for a hello. Real daemons, real AF_UNIX sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from tests.conftest import DaemonProcess
from wattgate.client import MAX_LINE, AsyncClient, Client, ClientError

StartDaemon = Callable[..., DaemonProcess]
IDLE = {"camera": {"source": "synthetic:empty"}}
NOT_JSON = [float("nan"), float("inf"), float("-inf")]


def assert_nothing_waits(client: Client, wait: float) -> None:
    """No unsolicited message comes within `wait` seconds: messages() times out, and the
    connection stays usable (a timeout keeps what was read)."""
    client.settimeout(wait)
    with pytest.raises(ClientError) as info:
        next(client.messages())
    assert info.value.code == "timeout"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `wattgate` command in a child process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "wattgate.cli", *args],
        capture_output=True, text=True, timeout=60,
    )


def assert_one_line(run: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """The README's promise: the exit code and one line on stderr saying why."""
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    for word in words:
        assert word in lines[0], run.stderr


def test_async_connect_to_a_full_daemon_raises_busy_like_the_sync_client(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon(daemon={"max_clients": 1}, **IDLE)
    holder = daemon.connect()
    with pytest.raises(ClientError) as sync_info:
        Client(str(daemon.socket))

    async def connect() -> Any:
        return await AsyncClient.connect(str(daemon.socket))

    with pytest.raises(ClientError) as async_info:
        asyncio.run(connect())
    assert async_info.value.code == sync_info.value.code == "busy"
    assert async_info.value.message == sync_info.value.message
    # which daemon is full, as every other connect error says which socket it was
    assert sync_info.value.message.startswith(f"{daemon.socket}: "), sync_info.value
    holder.close()
    assert daemon.stop() == 0


def test_cli_at_a_full_daemon_exits_75_to_say_try_again(start_daemon: StartDaemon) -> None:
    """busy is not "no daemon" (69): a script retries a full daemon later, and gets in."""
    daemon = start_daemon(daemon={"max_clients": 1}, **IDLE)
    holder = daemon.connect()
    assert_one_line(cli("status", "--socket", str(daemon.socket)), 75, "busy",
                    str(daemon.socket))
    holder.close()
    for _ in range(100):  # the daemon frees the slot once it has seen the close
        run = cli("status", "--json", "--socket", str(daemon.socket))
        if run.returncode != 75:
            break
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["class"] == "status"
    assert_one_line(cli("status", "--socket", str(daemon.socket) + ".none"), 69, "unavailable")
    assert daemon.stop() == 0


@pytest.mark.parametrize("value", NOT_JSON, ids=repr)
def test_a_request_holding_nan_or_infinity_is_refused_before_it_is_sent(
    start_daemon: StartDaemon, value: float,
) -> None:
    daemon = start_daemon(**IDLE)
    with daemon.connect() as client:
        client.settimeout(30)
        with pytest.raises(ClientError) as info:
            client.request("subscribe", topics=["results"], min_score=value)
        assert info.value.code == "bad_request"
        assert "'subscribe' not sent" in info.value.message
        assert "JSON" in info.value.message
        # Answers come in request order: had the line gone out, its bad_json answer would
        # be kept as an unsolicited message before this status answer.
        assert client.request("status")["class"] == "status"
        assert_nothing_waits(client, 0.2)
    assert daemon.stop() == 0


def test_the_async_client_refuses_nan_and_infinity_before_sending(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon(**IDLE)
    daemon.connect().close()

    async def talk() -> tuple[list[ClientError], dict[str, Any]]:
        refused = []
        async with await AsyncClient.connect(str(daemon.socket)) as client:
            for value in NOT_JSON:
                with pytest.raises(ClientError) as info:
                    await asyncio.wait_for(client.request("status", bogus=value), 30)
                refused.append(info.value)
            status = await asyncio.wait_for(client.request("status"), 30)
            # No bad_json answer came ahead of the status answer: nothing was sent.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.next_message(), 0.2)
            return refused, status

    refused, status = asyncio.run(talk())
    assert [e.code for e in refused] == ["bad_request"] * len(NOT_JSON)
    assert all("'status' not sent" in e.message for e in refused)
    assert status["class"] == "status"
    assert daemon.stop() == 0


def test_an_over_long_socket_path_says_why(tmp_path: Path) -> None:
    # The kernel's limit on an AF_UNIX path is 108 bytes; connect() refuses longer ones
    # with OSError("AF_UNIX path too long"), whose strerror is None.
    path = str(tmp_path / ("s" * 200 + ".sock"))
    with pytest.raises(ClientError) as sync_info:
        Client(path)

    async def connect() -> Any:
        return await AsyncClient.connect(path)

    with pytest.raises(ClientError) as async_info:
        asyncio.run(connect())
    for info in (sync_info, async_info):
        assert info.value.code == "unavailable"
        assert "too long" in info.value.message
        assert not info.value.message.endswith("None")
    run = cli("status", "--socket", path)
    assert_one_line(run, 69, "unavailable", "too long")
    assert "None" not in run.stderr


@pytest.mark.parametrize("first_line", [b"hello there\n", b"[1, 2]\n", b"\xff\xfe{}\n"])
def test_a_socket_that_does_not_speak_the_protocol_says_so_in_one_line(
    tmp_path: Path, first_line: bytes,
) -> None:
    """Another program's socket (a typo in --socket): what it sends is not a JSON object."""
    path = str(tmp_path / "other.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(4)

        def answer() -> None:
            for _ in range(3):
                peer, _ = listener.accept()
                with peer:
                    peer.sendall(first_line)
                    peer.recv(4096)

        server = threading.Thread(target=answer, daemon=True)
        server.start()
        with pytest.raises(ClientError) as info:
            Client(path)
        assert info.value.code == "protocol"
        with pytest.raises(ClientError) as async_info:
            asyncio.run(_async_connect(path))
        assert async_info.value.code == "protocol"
        assert_one_line(cli("status", "--socket", path), 1, "protocol")
        server.join(10)


async def _async_connect(path: str) -> None:
    client = await AsyncClient.connect(path)
    await client.close()


def test_a_daemon_gone_between_hello_and_request_is_a_closed_error(
    start_daemon: StartDaemon,
) -> None:
    """A daemon that dies (or stops: systemctl restart) under a connected client. sendall
    raised BrokenPipeError, which the CLI took for a closed stdout and exited 0 having
    printed nothing; recv raised ConnectionResetError, a traceback."""
    gone = start_daemon(**IDLE)
    client = gone.connect()
    gone.proc.kill()
    gone.wait()
    with client, pytest.raises(ClientError) as sent:
        client.request("status")  # the kernel refuses the write: EPIPE
    assert sent.value.code == "closed"
    assert str(gone.socket) in sent.value.message

    stopped = start_daemon(**IDLE)
    client = stopped.connect()
    stopped.proc.send_signal(signal.SIGSTOP)
    client.send({"cmd": "status", "id": 1})  # left unread in the daemon's socket
    stopped.proc.kill()
    stopped.wait()
    with client, pytest.raises(ClientError) as read:
        next(client.messages())  # a peer that closed with data unread: ECONNRESET
    assert read.value.code == "closed"
    assert str(stopped.socket) in read.value.message


def serve_once(path: str, behaviour: str) -> threading.Thread:
    """A one-connection stand-in for a daemon that goes away after its hello: at once
    ("close"), or once the request has come, without reading it ("reset")."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        with listener:
            peer, _ = listener.accept()
            with peer:
                peer.sendall(b'{"class":"hello","proto":1}\n')
                if behaviour == "reset":
                    select.select([peer], [], [], 30)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    return server


@pytest.mark.parametrize("behaviour", ["close", "reset"])
def test_the_cli_says_so_when_the_daemon_goes_away_mid_request(
    tmp_path: Path, behaviour: str
) -> None:
    path = str(tmp_path / "going.sock")
    server = serve_once(path, behaviour)
    run = cli("status", "--socket", path)
    assert_one_line(run, 1, "closed", path)
    assert run.stdout == ""
    server.join(30)


def test_a_request_over_the_line_limit_is_refused_before_it_is_sent(
    start_daemon: StartDaemon,
) -> None:
    """A line over 64 KiB makes the daemon answer too_large without an id and close the
    connection: the client lost the connection and got BrokenPipeError or "closed",
    not the reason. Refused before sending, the connection stays usable."""
    daemon = start_daemon(**IDLE)
    image = "A" * MAX_LINE
    with daemon.connect() as client:
        client.settimeout(30)
        with pytest.raises(ClientError) as info:
            client.request("infer", image=image)
        assert info.value.code == "too_large"
        assert "'infer' not sent" in info.value.message and "65536" in info.value.message
        assert client.request("status")["class"] == "status"

    async def talk() -> tuple[ClientError, dict[str, Any]]:
        async with await AsyncClient.connect(str(daemon.socket)) as client:
            with pytest.raises(ClientError) as info:
                await asyncio.wait_for(client.request("infer", image=image), 30)
            return info.value, await asyncio.wait_for(client.request("status"), 30)

    refused, status = asyncio.run(talk())
    assert refused.code == "too_large" and "'infer' not sent" in refused.message
    assert status["class"] == "status"
    assert daemon.stop() == 0


def serve_lines(
    path: str, hello: bytes, answer: Optional[bytes], connections: int = 2
) -> threading.Thread:
    """A stand-in for a daemon, for the sync and then the async client: it sends `hello`,
    waits for a request, then reads it and sends `answer` before closing, or, with no
    answer, closes with the request unread (the client's read fails with ECONNRESET)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(2)

    def serve() -> None:
        with listener:
            for _ in range(connections):
                peer, _ = listener.accept()
                with peer, contextlib.suppress(OSError):
                    peer.sendall(hello)
                    select.select([peer], [], [], 30)
                    if answer is not None:
                        peer.recv(65536)
                        peer.sendall(answer)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    return server


HELLO = b'{"class":"hello","proto":1}\n'


@pytest.mark.parametrize(
    ("hello", "answer", "code"),
    [
        (b'{"class":"hello","data":"' + b"x" * MAX_LINE + b'"}\n', None, "too_large"),
        (HELLO, None, "closed"),
        (HELLO, b'{"class":"status","id":1,"ver', "closed"),
    ],
    ids=["line over the limit", "reset", "closed mid-line"],
)
def test_the_async_client_fails_like_the_sync_client(
    tmp_path: Path, hello: bytes, answer: Optional[bytes], code: str
) -> None:
    """The async client raised ValueError for a line over the limit, ConnectionResetError
    for a daemon that closed with the request unread, and "protocol" (not JSON) for a
    connection closed in the middle of a line."""
    path = str(tmp_path / "odd.sock")
    server = serve_lines(path, hello, answer)

    def sync() -> None:
        with Client(path, timeout=30) as client:
            client.request("status")

    async def talk() -> None:
        async with await AsyncClient.connect(path) as client:
            await asyncio.wait_for(client.request("status"), 30)

    with pytest.raises(ClientError) as sync_info:
        sync()
    with pytest.raises(ClientError) as async_info:
        asyncio.run(talk())
    assert sync_info.value.code == async_info.value.code == code
    assert path in sync_info.value.message and path in async_info.value.message
    server.join(30)


def test_status_with_readings_that_have_no_value_is_shown(tmp_path: Path) -> None:
    """The daemon writes a number it has no finite value for (a sensor that read NaN) as
    null (docs/protocol.md); `wattgate status` formatted each with :.1f, a TypeError
    traceback, so a NaN meter reading made status unusable."""
    status = {
        "class": "status", "id": 1, "version": "0.1.0", "uptime_s": 12.0, "fps": None,
        "clients": 1,
        "source": {"description": "synthetic:empty 640x480@15", "state": "running"},
        "pipeline": {"frames": 10, "skipped": 9, "inferred": 1, "stale_dropped": 0,
                     "detections": 0, "skip_ratio": None, "mean_infer_ms": None},
        "power": {
            "profile": {"name": "balanced", "reason": "default (power.profile)"},
            "activity": {"state": "cooldown", "reason": "motion", "idle_in_s": None},
            "watts": {"value": None, "meter": "hwmon0"},
            "joules": {"measured": None},
            "temperatures": {"soc-thermal": 41.2, "npu-thermal": None},
            "knobs": {},
        },
    }
    path = str(tmp_path / "nan.sock")
    server = serve_lines(path, HELLO, json.dumps(status).encode() + b"\n", connections=1)
    run = cli("status", "--socket", path)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert "soc-thermal 41.2 °C" in run.stdout and "npu-thermal - °C" in run.stdout
    assert "power     - W (hwmon0)" in run.stdout
    assert "skipped 9 (-)" in run.stdout
    server.join(30)


def test_no_hello_in_time_says_the_daemon_may_still_be_starting(tmp_path: Path) -> None:
    """Under socket activation systemd holds the listening socket while the daemon loads its
    model: the connection is accepted and the hello comes late. "no message in time" did not
    say what to do about it."""
    path = tmp_path / "starting.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)  # connections queue; nobody answers yet
    said = (f"no hello from {path} within 0.2 s: the daemon may still be starting "
            "(a socket-activated start loads the model first)")
    try:
        with pytest.raises(ClientError) as info:
            Client(str(path), timeout=0.2)
        assert (info.value.code, info.value.message) == ("timeout", said)
        # the async client waited for good (a script hung on a daemon still loading)
        with pytest.raises(ClientError) as info:
            asyncio.run(asyncio.wait_for(AsyncClient.connect(str(path), timeout=0.2), 30))
        assert (info.value.code, info.value.message) == ("timeout", said)
    finally:
        listener.close()


@pytest.mark.parametrize("command", ["status", "watch", "events", "snap", "profile"])
def test_a_bad_config_under_json_is_an_error_object_on_stdout(
    tmp_path: Path, command: str,
) -> None:
    """The README: with --json a client command's error is also one JSON object on stdout,
    for a script that reads only stdout. A bad --config (exit 78) printed to stderr only:
    the script read nothing at all."""
    config = tmp_path / "config.toml"
    config.write_text("[daemon]\nmax_clients = -1\n")
    run = cli(command, "--json", "--config", str(config))
    assert run.returncode == 78, run.stderr
    error = json.loads(run.stdout)
    assert (error["class"], error["code"]) == ("error", "bad_config")
    assert str(config) in error["message"] and "daemon.max_clients" in error["message"]
    assert "daemon.max_clients" in run.stderr


@pytest.mark.parametrize("since, said", [
    (10, "wattgate: events 11 to 40 are no longer in the event log "
         "(pruned, or lost with a damaged log)\n"),
    (40, ""),
])
def test_events_says_when_events_after_since_are_gone(
    tmp_path: Path, since: int, said: str,
) -> None:
    """`events --since 10` of a log whose oldest kept event is 41 (30 pruned, or lost with a
    damaged log): the output began at 41 without a word, as if nothing had happened in
    between. It says which events are gone, on stderr (stdout stays events only); from 40
    nothing is gone."""
    reply = {"class": "reply", "cmd": "events", "id": 1, "last_seq": 41, "oldest_seq": 41,
             "more": False,
             "events": [{"class": "event", "seq": 41, "ts": 1763745600.0, "kind": "motion_start"}]}
    path = str(tmp_path / "pruned.sock")
    server = serve_lines(path, HELLO, json.dumps(reply).encode() + b"\n", connections=1)
    run = cli("events", "--since", str(since), "--json", "--socket", path)
    server.join(30)
    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["seq"] for line in run.stdout.splitlines()] == [41]
    assert run.stderr == said
