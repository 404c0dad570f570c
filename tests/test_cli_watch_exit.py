"""How `wattgate watch --reconnect` ends, for a script or a systemd timer that reads only its
exit code: a --duration over with no connection ever made fails as `watch` without
--reconnect fails when it cannot connect; one that watched for a while, even if the daemon
was gone at the end, exits 0. Real daemons, a real `watch` process, real AF_UNIX sockets."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable, Optional

import pytest

from tests.conftest import DaemonProcess
from tests.test_watch_reconnect import WAIT_S, Watch, cli

StartDaemon = Callable[..., DaemonProcess]
IDLE = {"camera": {"source": "synthetic:empty"}}
# The --duration of a watch that must connect, print a result, see its daemon leave and try
# to connect again before it ends: a few seconds do on most machines, the last is for a slow
# one. A duration that ends sooner proves nothing, and the watch is started again.
DURATIONS_S = (3.0, 15.0)
# How long a watch that lost its daemon must still run to have tried to connect again at
# least once (its first try comes RECONNECT_FIRST_S after the loss: a tenth of a second).
RETRYING_S = 1.0


@pytest.fixture
def watches() -> Iterator[Callable[..., Watch]]:
    """Start `wattgate watch ARGS` in the background; killed at teardown if still up."""
    started: list[Watch] = []

    def start(tmp: Path, *args: str) -> Watch:
        started.append(Watch(tmp, *args))
        return started[-1]

    yield start
    for watch in started:
        watch.kill()


def waiting_line(sock: Path, reason: str) -> str:
    return f"wattgate: cannot connect to {sock} ({reason}); trying again until it can"


@pytest.mark.parametrize("there", ["nothing", "a socket nobody listens on"])
def test_a_duration_over_with_no_daemon_ever_fails_as_without_reconnect(
    tmp_path: Path, there: str,
) -> None:
    """Exit 69 and the error `watch` without --reconnect gives (naming the socket), after
    the one line that said it was waiting; with --json the error object on stdout too."""
    sock = tmp_path / "wattgate.sock"
    if there != "nothing":  # left by a daemon that was killed
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).bind(str(sock))
    reason = "No such file or directory" if there == "nothing" else "Connection refused"
    without = cli("watch", "--socket", str(sock))
    assert without.returncode == 69
    assert str(sock) in without.stderr

    run = cli("watch", "--reconnect", "--duration", "0.5", "--socket", str(sock))
    assert run.returncode == 69, run.stderr
    assert run.stderr.splitlines() == [waiting_line(sock, reason), *without.stderr.splitlines()]
    assert run.stdout == ""

    as_json = cli("watch", "--reconnect", "--json", "--duration", "0.5", "--socket", str(sock))
    assert as_json.returncode == 69, as_json.stderr
    error = json.loads(as_json.stdout)
    assert error["class"] == "error" and error["code"] == "unavailable"
    assert str(sock) in error["message"]


def test_a_duration_over_at_a_full_daemon_exits_75_naming_the_socket(
    start_daemon: StartDaemon,
) -> None:
    """A daemon that answers only `busy` (daemon.max_clients reached) is one the watch
    never connected to: 75, try again, as without --reconnect; its message does not name
    the socket, so the error does."""
    daemon = start_daemon(daemon={"max_clients": 1}, **IDLE)
    holder = daemon.connect()
    run = cli("watch", "--reconnect", "--duration", "0.5", "--socket", str(daemon.socket))
    holder.close()
    assert run.returncode == 75, run.stderr
    assert "Traceback" not in run.stderr
    assert re.fullmatch(rf"wattgate: busy: {re.escape(str(daemon.socket))}: .+",
                        run.stderr.splitlines()[-1]), run.stderr
    assert daemon.stop() == 0


def outlives_its_daemon(start_daemon: StartDaemon, watches: Callable[..., Watch], tmp: Path,
                        duration: float) -> Optional[Watch]:
    """A `watch --reconnect --duration` that printed a result, saw its daemon stop and was
    still running RETRYING_S later, trying to connect again; None if its duration ended
    before all that."""
    tmp.mkdir()
    daemon = start_daemon(camera={"source": "synthetic:empty", "fps": 15.0},
                          gate={"heartbeat_s": 0.2})
    daemon.connect().close()
    watch = watches(tmp, "--reconnect", "--json", "--duration", f"{duration:g}",
                    "--socket", str(daemon.socket))
    lost = rf"wattgate: connection to {re.escape(str(daemon.socket))} lost .*"
    if not running_until(watch, lambda: '"class": "result"' in watch.stdout()):
        daemon.stop()
        return None
    assert daemon.stop() == 0
    if not running_until(watch, lambda: any(re.fullmatch(lost, line)
                                            for line in watch.stderr_lines())):
        return None
    try:
        watch.proc.wait(RETRYING_S)
    except subprocess.TimeoutExpired:
        return watch
    return None


def running_until(watch: Watch, ready: Callable[[], bool]) -> bool:
    """Whether ready() came true before the watch exited (WAIT_S at most)."""
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if watch.proc.poll() is not None:
            return ready()
        assert time.monotonic() < deadline, watch.err.read_text()
        time.sleep(0.05)
    return True


def test_a_watch_that_was_connected_exits_0_when_the_duration_ends_after_the_daemon_left(
    start_daemon: StartDaemon, watches: Callable[..., Watch], tmp_path: Path,
) -> None:
    """It watched: what came while connected was printed, and stderr says the connection
    was lost. Short durations first: a longer one only if the machine was too slow for the
    watch to connect, see the daemon leave and try again within it."""
    for duration in DURATIONS_S:
        watch = outlives_its_daemon(start_daemon, watches, tmp_path / f"{duration:g}s", duration)
        if watch is not None:
            break
    else:
        pytest.fail(f"no watch outlived its daemon within {DURATIONS_S} s")
    assert watch.proc.wait(WAIT_S) == 0, watch.err.read_text()
    assert all(json.loads(line)["class"] == "result" for line in watch.stdout().splitlines())


def test_with_count_and_no_daemon_it_says_once_that_it_waits(
    watches: Callable[..., Watch], tmp_path: Path,
) -> None:
    """--count with no daemon waits for one, and says so on stderr once, not at each try."""
    sock = tmp_path / "wattgate.sock"
    watch = watches(tmp_path, "--reconnect", "--count", "1", "--socket", str(sock))
    said = waiting_line(sock, "No such file or directory")
    watch.wait_stderr(re.escape(said))
    with contextlib.suppress(subprocess.TimeoutExpired):
        watch.proc.wait(1.0)  # a few tries more, and still waiting
    assert watch.proc.poll() is None
    assert watch.interrupt() == 130
    assert watch.stderr_lines() == [said] and watch.stdout() == ""

