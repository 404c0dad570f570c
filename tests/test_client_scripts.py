"""The Python client and the CLI as scripts use them: ids a program picks itself beside the
client's own, a request cut short by a daemon that reads too slowly, and errors a script
reading `--json` output can parse. Real daemons and real AF_UNIX sockets."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import DaemonProcess
from tests.test_client_edges import slow_snap_daemon
from tests.test_client_errors import HELLO, IDLE, assert_one_line, cli
from wattgate.client import Client, ClientError

StartDaemon = Callable[..., DaemonProcess]


def test_an_id_a_program_sends_itself_is_not_taken_for_a_request_s(
    start_daemon: StartDaemon,
) -> None:
    """send() with integer id 1, then request(), whose first id was 1 too: the answer to
    the message sent came first and was returned as request()'s answer."""
    daemon = start_daemon(**IDLE)
    with daemon.connect() as client:
        client.settimeout(30)
        client.send({"cmd": "events", "since": 0, "id": 1})
        client.send({"cmd": "events", "since": 0, "id": 2})
        assert client.request("status")["class"] == "status"
        mine = client.messages()
        assert [(m["cmd"], m["id"]) for m in (next(mine), next(mine))] == [
            ("events", 1), ("events", 2)]
        # Once their answers have come, their ids are free again for request().
        assert client.request("status")["class"] == "status"
    assert daemon.stop() == 0


def test_an_id_a_request_waits_for_is_refused_to_send(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """A request given up on (a timeout) is still answered later, and that answer is
    dropped when it comes: a message sent with its id would have had its answer dropped
    in its place, and the request's late answer come out of messages()."""
    daemon = slow_snap_daemon(start_daemon, tmp_path)
    with Client(str(daemon.socket), timeout=30) as client:
        client.settimeout(0.05)
        with pytest.raises(ClientError) as timed_out:
            client.request("snap", timeout_ms=1000)  # id 1, answered "unavailable" later
        assert timed_out.value.code == "timeout"
        client.settimeout(30)
        with pytest.raises(ClientError) as refused:
            client.send({"cmd": "status", "id": 1})
        assert refused.value.code == "bad_request"
        assert refused.value.message == (
            "'status' not sent: id 1 is a request()'s whose answer has not come")
        assert client.request("status")["class"] == "status"  # the snap's answer came first
        client.send({"cmd": "status", "id": 1})  # free again
        assert next(client.messages())["id"] == 1
    assert daemon.stop() == 0


class SilentServer:
    """A stand-in for a daemon that says hello, then reads nothing until `drain` is set,
    then reads everything until the client closes: what the daemon would have read."""

    def __init__(self, path: str) -> None:
        self.drain = threading.Event()
        self.arrived = threading.Event()  # the first bytes of a request are in its socket
        self.received = bytearray()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with self._listener:
            peer, _ = self._listener.accept()
            with peer:
                peer.sendall(HELLO)
                select.select([peer], [], [], 60)
                self.arrived.set()
                self.drain.wait(60)
                peer.settimeout(60)
                while chunk := peer.recv(65536):
                    self.received += chunk

    def cut_client(self, path: str) -> Client:
        """A client whose sends this server's pace cuts into pieces: a small send buffer
        (the kernel doubles it, socket(7)), so that a line of 60 KB is written in pieces
        and the first pieces fill it: a daemon far behind in reading."""
        client = Client(path, timeout=30)
        client._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return client

    def lines(self) -> list[bytes]:
        """The whole lines received, once the client has closed."""
        self._thread.join(60)
        assert not self._thread.is_alive()
        return bytes(self.received).split(b"\n")[:-1]


def test_a_request_cut_short_by_a_timeout_leaves_no_garbled_line(tmp_path: Path) -> None:
    """sendall() that times out may have written part of the line. The next request was
    written after that part: the daemon read one line, half of one request and all of the
    next, not JSON. The connection is now closed instead, and says why."""
    path = str(tmp_path / "slow.sock")
    server = SilentServer(path)
    client = server.cut_client(path)
    client.settimeout(0.5)
    with pytest.raises(ClientError) as cut:
        client.request("status", pad="x" * 60_000)
    assert cut.value.code == "timeout"
    assert "was cut short after" in cut.value.message
    server.drain.set()
    client.settimeout(30)
    for later in (lambda: client.send({"cmd": "status", "id": "next"}),
                  lambda: client.request("status"), lambda: next(client.messages())):
        with pytest.raises(ClientError) as refused:
            later()
        assert refused.value.code == "closed"
        assert refused.value.message.startswith(
            f"the connection was closed when a request to {path} was cut short after ")
    client.close()
    assert_part_of_one_line(server)


def assert_part_of_one_line(server: SilentServer) -> None:
    """The server got part of a request line and then the end of the stream: nothing it
    could take for a request, garbled or not."""
    lines = server.lines()  # what the daemon would have taken for requests
    assert all(json.loads(line) for line in lines)
    assert server.received and not lines


class Interrupted(Exception):
    """What a signal handler raises, as KeyboardInterrupt does for SIGINT."""


def test_a_request_cut_short_by_a_signal_handler_s_exception_leaves_no_garbled_line(
    tmp_path: Path,
) -> None:
    """Without a timeout, a send blocked on a daemon that reads slowly is cut short by an
    exception from a signal handler (Ctrl-C's KeyboardInterrupt; an alarm a program uses as
    its own timeout). A program that carries on after it sent its next request onto the
    part already written. A handler for SIGUSR1 stands in for SIGINT's: pytest's own."""
    path = str(tmp_path / "slow.sock")
    server = SilentServer(path)
    client = server.cut_client(path)
    client.settimeout(None)
    main = threading.main_thread().ident
    assert main is not None

    def raise_interrupted(signum: int, frame: object) -> None:
        raise Interrupted

    def interrupt() -> None:
        server.arrived.wait(60)  # the send has begun and blocks on the full buffer
        signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, raise_interrupted)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(Interrupted):
            client.request("status", pad="x" * 60_000)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    server.drain.set()
    with pytest.raises(ClientError) as refused:
        client.send({"cmd": "status", "id": "next"})
    assert refused.value.code == "closed"
    assert refused.value.message == (
        f"the connection was closed when a request to {path} was cut short by Interrupted "
        "while being sent: connect again")
    client.close()
    assert_part_of_one_line(server)


def json_error(run: Any, code: int, error: str) -> dict[str, Any]:
    """A client command's error with --json: the exit code, one line on stderr for people,
    and one JSON object on stdout for the script, the protocol's error class."""
    assert_one_line(run, code, error)
    assert run.stdout.count("\n") == 1, run.stdout
    failure: dict[str, Any] = json.loads(run.stdout)
    assert failure["class"] == "error" and failure["code"] == error
    assert f"{error}: {failure['message']}" in run.stderr
    return failure


def test_with_json_an_error_is_a_json_object_on_stdout(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """A script parsing stdout of `--json` got nothing when a command failed: the error was
    only a text line on stderr."""
    none = str(tmp_path / "none.sock")
    for command in (["status"], ["watch"], ["events"], ["snap"], ["profile"]):
        failure = json_error(cli(*command, "--json", "--socket", none), 69, "unavailable")
        assert none in failure["message"]
    daemon = start_daemon(**IDLE)
    daemon.connect().close()
    sock = str(daemon.socket)
    failure = json_error(cli("profile", "--json", "powersave", "--socket", sock), 69,
                         "unavailable")  # no sysfs knobs here: no power control
    assert failure["message"] == "power control is not running"
    # Without --json, the text line alone.
    run = cli("profile", "powersave", "--socket", sock)
    assert_one_line(run, 69, "unavailable")
    assert run.stdout == ""
    assert daemon.stop() == 0


def test_with_json_an_error_after_output_comes_last_and_a_closed_stdout_is_no_traceback(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """`watch --json` prints as it goes: when the daemon stops, the error is the last line
    (README: without --reconnect, watch ends then). A script that stopped reading stdout
    still gets the exit code and the stderr line, not a BrokenPipeError traceback."""
    daemon = start_daemon(camera={"source": "synthetic:empty", "fps": 15.0},
                          gate={"heartbeat_s": 0.2})
    daemon.connect().close()
    watch = subprocess.Popen(
        [sys.executable, "-m", "wattgate.cli", "watch", "--json", "--socket",
         str(daemon.socket)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert watch.stdout is not None
    assert json.loads(watch.stdout.readline())["class"] == "result"  # a heartbeat's
    assert daemon.stop() == 0
    out, err = watch.communicate(timeout=60)
    run = subprocess.CompletedProcess(watch.args, watch.returncode, out, err)
    assert_one_line(run, 1, "closed")
    last = json.loads(out.splitlines()[-1])
    assert last == {"class": "error", "code": "closed",
                    "message": f"{daemon.socket} closed the connection"}

    read, write = os.pipe()
    os.close(read)  # nobody reads: a write to it fails EPIPE
    with os.fdopen(write, "w") as unread:
        closed = subprocess.run(
            [sys.executable, "-m", "wattgate.cli", "status", "--json", "--socket",
             str(tmp_path / "none.sock")], stdout=unread, stderr=subprocess.PIPE, text=True,
            timeout=60)
    assert_one_line(closed, 69, "unavailable")
