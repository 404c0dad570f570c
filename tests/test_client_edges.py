"""The Python client and the client commands of the CLI against real daemons and against
real AF_UNIX servers that misbehave: what a script or a user sees when something goes
wrong, and that no answer, result or event is lost or taken for another."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import wattgate.client as client_module
from tests.conftest import DaemonProcess
from tests.test_client_errors import (
    HELLO,
    IDLE,
    assert_nothing_waits,
    assert_one_line,
    cli,
    serve_lines,
)
from wattgate.client import AsyncClient, Client, ClientError

StartDaemon = Callable[..., DaemonProcess]
NOBODY = 65534  # nobody and nogroup (Debian's base-passwd)


@pytest.fixture
def full_socket(tmp_path: Path) -> Iterator[str]:
    """A listener whose queue of connections not yet accepted is full: a daemon whose event
    loop is busy, stopped, or still loading its model under a listening socket. listen(0)
    queues one; the next non-blocking connect() fails EAGAIN."""
    path = str(tmp_path / "full.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(0)
        queued: list[socket.socket] = []
        try:
            while True:
                waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                queued.append(waiting)
                waiting.setblocking(False)
                waiting.connect(path)
        except BlockingIOError:
            yield path
        finally:
            for waiting in queued:
                waiting.close()


async def _async_connect(path: str) -> Any:
    return await asyncio.wait_for(AsyncClient.connect(path), 30)


def test_a_full_connection_queue_is_busy_not_no_daemon(full_socket: str) -> None:
    """connect() fails EAGAIN while the listener's queue is full: a daemon is there. Both
    clients said "unavailable" (the CLI's 69, "no daemon"), and the asyncio client, which
    took EAGAIN for a connection in progress, said "closed (Invalid argument)"."""
    with pytest.raises(ClientError) as sync_info:
        Client(full_socket, timeout=5)
    with pytest.raises(ClientError) as async_info:
        asyncio.run(_async_connect(full_socket))
    for info in (sync_info, async_info):
        assert info.value.code == "busy", info.value
        assert full_socket in info.value.message and "try again" in info.value.message
    assert_one_line(cli("status", "--socket", full_socket), 75, "busy", full_socket,
                    "try again")


def cli_as(uid: int, gid: int, groups: list[int], *args: str) -> subprocess.CompletedProcess[str]:
    """The real `wattgate` command run by another user (root may connect to any socket).
    It drops to that user once imported: Python's own files here are under /root."""
    code = ("import os, sys\nfrom wattgate.cli import main\n"
            f"os.setgroups({groups!r}); os.setgid({gid}); os.setuid({uid})\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the CLI as other users")
def test_permission_denied_on_the_socket_is_forbidden_and_names_the_group(
    start_daemon: StartDaemon, reachable_tmp: Path,
) -> None:
    """A user outside the socket's group was told "unavailable" (exit 69, no daemon) and not
    what to do; the daemon was there all along."""
    path = reachable_tmp / "wattgate.sock"
    daemon = start_daemon(daemon={"socket": str(path), "socket_group": "daemon"}, **IDLE)
    daemon.connect().close()
    for extra in ([], ["--json"]):
        run = cli_as(NOBODY, NOBODY, [], "status", *extra, "--socket", str(path))
        assert_one_line(run, 77, "forbidden", str(path), "Permission denied",
                        "add the user to group daemon (usermod -aG daemon USER)")
        if extra:  # the same error for a script (tests/test_client_scripts.py)
            assert json.loads(run.stdout)["code"] == "forbidden"
        else:
            assert run.stdout == ""
    # What it says to do is what it takes.
    run = cli_as(NOBODY, NOBODY, [1], "status", "--json", "--socket", str(path))
    assert run.returncode == 0, run.stderr
    assert daemon.stop() == 0


def test_no_daemon_says_what_to_do(tmp_path: Path) -> None:
    """No socket, and one that a killed daemon left behind, said only "No such file or
    directory" and "Connection refused"; a path that is no socket at all (a config file
    given as --socket) said "Connection refused" as if a daemon had stopped."""
    stale = tmp_path / "stale.sock"
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).bind(str(stale))  # closed at once
    config = tmp_path / "config.toml"
    config.write_text("")
    for path, why in ((tmp_path / "none.sock", "No such file or directory"),
                      (stale, "Connection refused")):
        for extra in ([], ["--json"]):
            assert_one_line(cli("status", *extra, "--socket", str(path)), 69, "unavailable",
                            f"{path}: {why}: is the daemon running? (systemctl status wattgate")
    assert_one_line(cli("status", "--socket", str(config)), 69,
                    f"{config}: Connection refused: not a socket")


def slow_snap_daemon(start_daemon: StartDaemon, tmp_path: Path) -> DaemonProcess:
    """A daemon waiting for a camera file that never comes: a snap is answered only when its
    timeout_ms runs out, "unavailable", and the answers after it wait their turn."""
    daemon = start_daemon(camera={"source": str(tmp_path / "not-yet.avi")})
    daemon.connect().close()
    return daemon


def test_an_abandoned_request_s_answer_is_not_taken_for_a_message(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """A request given up on (a socket timeout; asyncio.wait_for cancelling the await) is
    answered later all the same. That answer was kept and came out of messages() and
    next_message() as if the daemon had sent it unasked: a `watch` would print it."""
    daemon = slow_snap_daemon(start_daemon, tmp_path)

    async def cancel_then_ask() -> dict[str, Any]:
        async with await AsyncClient.connect(str(daemon.socket)) as client:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.request("snap", timeout_ms=1000), 0.05)
            status = await asyncio.wait_for(client.request("status"), 30)
            with pytest.raises(asyncio.TimeoutError):  # the snap's answer came before it
                await asyncio.wait_for(client.next_message(), 0.5)
            return status

    assert asyncio.run(cancel_then_ask())["class"] == "status"

    with Client(str(daemon.socket), timeout=30) as client:
        client.settimeout(0.05)
        with pytest.raises(ClientError) as info:
            client.request("snap", timeout_ms=1000)
        assert info.value.code == "timeout"
        client.settimeout(30)
        assert client.request("status")["class"] == "status"
        assert_nothing_waits(client, 0.5)
    assert daemon.stop() == 0


def test_async_requests_from_several_tasks_each_get_their_answer(
    start_daemon: StartDaemon,
) -> None:
    """Two tasks awaiting requests on one AsyncClient (asyncio.gather) both read the
    stream: the second readline() raised RuntimeError ("already waiting for incoming
    data"). A task waiting for a message does not hold back the answers of the others."""
    daemon = start_daemon(**IDLE)
    daemon.connect().close()

    async def together() -> tuple[list[str], str, str]:
        async with await AsyncClient.connect(str(daemon.socket)) as client:
            answers = await asyncio.wait_for(asyncio.gather(
                client.request("status"), client.request("events", since=0),
                client.request("subscribe", topics=["results"])), 30)
            waiting = asyncio.create_task(client.next_message())
            snap = await asyncio.wait_for(client.request("snap", timeout_ms=10_000), 30)
            result = await asyncio.wait_for(waiting, 30)
            return [a["cmd"] for a in answers], snap["result"]["reason"], result["class"]

    assert asyncio.run(together()) == (["status", "events", "subscribe"], "snap", "result")
    assert daemon.stop() == 0


def test_empty_lines_from_the_daemon_are_ignored(tmp_path: Path) -> None:
    """docs/protocol.md: "Empty lines are ignored", and the daemon ignores them in requests.
    Both clients took one for a line that is not JSON: "protocol", no daemon of ours."""
    path = str(tmp_path / "blank.sock")
    event = b'{"class":"event","seq":7,"ts":1.0,"kind":"motion_start"}\n'
    answer = b"\n" + event + b" \r\n\n" + b'{"class":"status","id":1}\n'
    server = serve_lines(path, b"\n" + HELLO + b"\n", answer)

    with Client(path, timeout=30) as client:
        assert client.request("status") == {"class": "status", "id": 1}
        assert next(client.messages())["seq"] == 7

    async def talk() -> tuple[dict[str, Any], dict[str, Any]]:
        async with await AsyncClient.connect(path) as client:
            status = await asyncio.wait_for(client.request("status"), 30)
            return status, await asyncio.wait_for(client.next_message(), 30)

    status, message = asyncio.run(talk())
    assert status == {"class": "status", "id": 1} and message["seq"] == 7
    server.join(30)


@pytest.mark.parametrize(
    ("first", "why"),
    [(b'{"class":"hello","proto":2}\n', "speaks protocol version 2; this client speaks version 1"),
     (b'{"class":"hello","proto":true}\n', "speaks protocol version true"),
     (b'{"class":"hello"}\n', "speaks protocol version null"),
     (b'{"jsonrpc":"2.0","method":"ready"}\n', 'did not begin with a hello: {"jsonrpc"')],
    ids=["proto 2", "proto true", "no proto", "another program"],
)
def test_a_first_message_that_is_no_hello_of_version_1_is_refused(
    tmp_path: Path, first: bytes, why: str,
) -> None:
    """Any JSON object was taken for the hello: a daemon of another major version (which
    may change what messages mean) or another program's JSON-lines socket was talked to
    as ours, and a request to it waited for an answer that never came."""
    path = str(tmp_path / "other.sock")
    server = serve_lines(path, first, None, connections=3)
    with pytest.raises(ClientError) as info:
        Client(path, timeout=30)
    with pytest.raises(ClientError) as async_info:
        asyncio.run(_async_connect(path))
    for raised in (info, async_info):
        assert raised.value.code == "protocol" and f"{path} {why}" in raised.value.message
    assert_one_line(cli("status", "--socket", path), 1, "protocol", why)
    server.join(30)


def test_a_timeout_of_0_polls_for_a_message_without_losing_the_connection(
    start_daemon: StartDaemon,
) -> None:
    """settimeout(0) (check for a message, do not wait) made a read with nothing to read
    "closed (Resource temporarily unavailable)", as if the daemon had gone."""
    daemon = start_daemon(**IDLE)
    with daemon.connect() as client:
        assert_nothing_waits(client, 0)
        client.settimeout(30)
        assert client.request("status")["class"] == "status"
    assert daemon.stop() == 0


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_watch_reconnect_does_not_wait_for_a_path_that_is_no_socket(
    tmp_path: Path, kind: str
) -> None:
    """`watch --reconnect` waits for a socket not there yet or nobody listens on; a
    directory or a regular file (--socket /run/wattgate, the directory: an easy slip) will
    never be one, as `run` refuses such a daemon.socket. It retried forever, saying only
    "Connection refused"; it now ends as without --reconnect."""
    path = tmp_path / "wattgate"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_text("")
    run = subprocess.run([sys.executable, "-m", "wattgate.cli", "watch", "--reconnect",
                          "--socket", str(path)], capture_output=True, text=True, timeout=60)
    assert_one_line(run, 69, f"{path}: Connection refused: not a socket")


def test_a_socket_removed_between_the_refusal_and_the_look_is_still_waited_for(
    tmp_path: Path,
) -> None:
    """A daemon stopping or starting removes its socket: refused, then gone when the
    client looks at what the path is. That is a daemon not there yet (ECONNREFUSED, which
    watch --reconnect waits through), not a path that is no socket (ENOTSOCK, which ends
    it). The moment between the two cannot be timed from here, so the refusal is handed
    to the client's own reading of it, as connect() gave it, for a path now gone."""
    gone = tmp_path / "wattgate.sock"
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert client_module._unavailable(str(gone), refused).errno == errno.ECONNREFUSED
    gone.write_text("")
    assert client_module._unavailable(str(gone), refused).errno == errno.ENOTSOCK
