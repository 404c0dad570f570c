"""A benchmark's daemons, when things go wrong: one that will not start, one that dies
mid-run, and the `wattgate bench` process itself being stopped or killed.

Real daemons and a real `wattgate bench` process throughout. The bench runs `idle --quick`
with many repeats, so that it is surely still measuring when a test acts on it; each test
ends it long before those repeats would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.common import REPO, DaemonExited, daemon

LONG_RUN = ["bench", "idle", "--quick", "--repeats", "600"]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A TMPDIR of our own for the bench's daemons, short enough for their socket paths
    (pytest's tmp_path can make them longer than a Unix socket allows)."""
    path = Path(tempfile.mkdtemp(prefix="wgb-", dir="/tmp"))
    yield path
    for pid in daemons_under(path):  # whatever a failing test left running
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


def daemons_under(root: Path) -> list[int]:
    """Live (not zombie) processes whose command line names a path under root: the
    daemons a bench started with TMPDIR=root."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"run --config {root}/" in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def serving(root: Path) -> bool:
    """A bench daemon under root has its socket up: the bench is inside its run."""
    return any(root.glob("wattgate-bench-*/wattgate.sock"))


def wait_until(condition: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def start_bench(args: list[str], tmp: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "wattgate.cli", *args], cwd=REPO,
                            env={**os.environ, "TMPDIR": str(tmp)}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_daemon_that_will_not_start_is_one_error_not_a_traceback(short_tmp: Path) -> None:
    """A socket path too long for a Unix socket: the daemon exits 78 at once."""
    deep = short_tmp / ("x" * 90)
    deep.mkdir()
    bench = start_bench(["bench", "idle", "--quick", "--json"], deep)
    out, err = bench.communicate(timeout=300)
    assert bench.returncode == 1, err
    assert "Traceback" not in err
    assert "\nwattgate bench idle: bench daemon exited 78;" in err, err
    assert "bytes long" in err, "the daemon's own reason, from its log"
    error = json.loads(out)
    assert out.count("\n") == 1
    assert error["class"] == "error" and error["code"] == "bench_failed"
    assert error["bench"] == "idle" and "exited 78" in error["message"]


def test_a_daemon_that_dies_mid_run_is_named_with_its_exit_status_and_log() -> None:
    camera = {"source": "synthetic:office", "realtime": True}
    with pytest.raises(DaemonExited) as raised, daemon(
            camera=camera, daemon={"log_level": "info"}) as run:
        client = run.connect()
        run.proc.kill()
        run.status(client)
    assert raised.value.returncode == -signal.SIGKILL
    message = str(raised.value)
    assert message.startswith("bench daemon exited -9 (SIGKILL); the end of its log:\n")
    assert message.partition("\n")[2].strip(), "the log's tail, read before it was deleted"
    assert not run.root.exists()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_sigterm_and_sighup_stop_the_daemons_and_remove_their_directories(
        stop: signal.Signals, short_tmp: Path) -> None:
    bench = start_bench(LONG_RUN, short_tmp)
    try:
        wait_until(lambda: serving(short_tmp))
        started = daemons_under(short_tmp)
        bench.send_signal(stop)
        _, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 128 + stop, err
    assert f"wattgate bench idle: stopped by {stop.name}" in err
    assert "Traceback" not in err
    assert not daemons_under(short_tmp), f"left running, of {started}"
    assert not list(short_tmp.iterdir()), "temporary directories left"


def test_a_killed_bench_takes_its_daemons_with_it(short_tmp: Path) -> None:
    """SIGKILL runs no clean-up at all: the daemons get SIGTERM from the kernel when their
    parent dies (its directory, unavoidably, stays)."""
    bench = start_bench(LONG_RUN, short_tmp)
    try:
        wait_until(lambda: serving(short_tmp))
        bench.kill()
        bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
    wait_until(lambda: not daemons_under(short_tmp))


def test_a_bench_under_nohup_outlives_a_hangup(short_tmp: Path) -> None:
    """nohup ignores SIGHUP so that a run outlives the terminal (an SSH session) it began
    in; the bench's own SIGHUP handler replaced that, and logging out ended the run."""
    bench = subprocess.Popen(["nohup", sys.executable, "-m", "wattgate.cli", *LONG_RUN],
                             cwd=REPO, env={**os.environ, "TMPDIR": str(short_tmp)},
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: serving(short_tmp))
        bench.send_signal(signal.SIGHUP)
        with pytest.raises(subprocess.TimeoutExpired):
            bench.wait(timeout=2.0)  # still running: the hangup was ignored
        bench.send_signal(signal.SIGTERM)
        _, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 128 + signal.SIGTERM, err
    assert not daemons_under(short_tmp)
