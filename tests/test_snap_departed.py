"""A client that hangs up while its `snap` waits gives its place back: nothing is read
from a connection while its request runs, so the hang-up went unseen until the snap timed
out, up to a minute, and a few abandoned snaps (a trigger script that retries with a
shorter timeout of its own) filled daemon.max_clients: `wattgate status` got `busy`
exactly when the camera was down. Real daemon, real AF_UNIX sockets."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Callable

from tests.conftest import DaemonProcess
from wattgate.client import Client, ClientError

StartDaemon = Callable[..., DaemonProcess]
WAIT_S = 30.0  # half the snaps' timeout: on time only if the hang-ups were seen


def test_a_client_that_hangs_up_during_its_snap_frees_its_place(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    daemon = start_daemon(daemon={"max_clients": 2},
                          camera={"source": str(tmp_path / "not-there-yet.avi")})
    daemon.connect().close()  # up and serving
    for _ in range(2):  # no frame will come: each snap would wait its whole minute
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(daemon.socket))
            hello = sock.makefile("rb").readline()
            assert json.loads(hello)["class"] == "hello"
            sock.sendall(b'{"cmd":"snap","timeout_ms":60000,"id":1}\n')
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            with Client(str(daemon.socket), timeout=5.0) as client:
                status = client.request("status")
                break
        except ClientError as exc:
            assert exc.code == "busy", exc
            assert time.monotonic() < deadline, "the departed snaps still hold their places"
            time.sleep(0.2)
    assert status["clients"] == 1


def test_a_client_that_only_stops_sending_still_gets_its_snap_answer(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """`echo '{"cmd":"snap"}' | socat - UNIX-CONNECT:...` shuts its sending side at once
    and waits for the answer: that is no hang-up."""
    daemon = start_daemon(camera={"source": str(tmp_path / "not-there-yet.avi")})
    daemon.connect().close()  # up and serving
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30.0)
        sock.connect(str(daemon.socket))
        lines = sock.makefile("rb")
        assert json.loads(lines.readline())["class"] == "hello"
        sock.sendall(b'{"cmd":"snap","timeout_ms":3000,"id":7}\n')
        sock.shutdown(socket.SHUT_WR)
        answer = json.loads(lines.readline())
    assert (answer["class"], answer["id"], answer["code"]) == ("error", 7, "unavailable")
    assert "no frame was inferred within 3000 ms" in answer["message"]
