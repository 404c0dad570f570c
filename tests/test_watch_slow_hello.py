"""`watch` says on stderr when the daemon is slow to answer: under socket activation the
connection is accepted at once and the hello comes only once the model is loaded, seconds
on a board, and a watch that printed nothing meanwhile looked hung (with --reconnect, for up
to RECONNECT_HELLO_S a try). Real AF_UNIX sockets, the real CLI in a child process."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.test_client_errors import HELLO, cli, serve_lines

WAITING = "waiting for the daemon at"


def test_a_daemon_slow_to_answer_is_said_once(tmp_path: Path) -> None:
    path = tmp_path / "starting.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)  # connections queue; nobody answers
    try:
        run = cli("watch", "--socket", str(path), "--reconnect", "--duration", "3")
    finally:
        listener.close()
    assert run.returncode != 0  # never connected (watch_reconnect: as plain watch does)
    lines = run.stderr.splitlines()
    assert sum(WAITING in line for line in lines) == 1, run.stderr
    assert f"{WAITING} {path}" in lines[0]


def test_a_prompt_hello_is_not_remarked_on(tmp_path: Path) -> None:
    path = str(tmp_path / "prompt.sock")
    server = serve_lines(path, HELLO, None, connections=1)
    run = cli("watch", "--socket", path)
    server.join(30)
    assert WAITING not in run.stderr, run.stderr
