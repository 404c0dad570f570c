"""`make demo` where things go wrong around it: a second demo at once, a directory it may
not write, its daemon dying, its reader going away, a deep checkout. The demo runs as a
real process with its real daemon child; nothing here asserts how long anything takes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_sim_edges import DemoRun, alive, demo_run
from wattgate import boards

DEMO = [sys.executable, "-m", "wattgate.demo"]


def demo_socket(cwd: Path) -> Path:
    """The socket the demo gave its daemon, read back from the config it wrote."""
    match = re.search(r'^socket = "(.*)"$', (cwd / "run/demo.toml").read_text(), re.M)
    assert match is not None
    return Path(match.group(1))


def test_two_demos_started_together_one_runs_and_the_other_says_so(tmp_path: Path) -> None:
    """The second used to find no daemon yet, rewrite the board, connect to the first
    one's daemon and show its results as its own, then fail with its own daemon's 69."""
    first = DemoRun(tmp_path, 120.0)
    try:
        first.wait_for("demo: starting the daemon")  # set up, its daemon not yet listening
        second = subprocess.run([*DEMO, "--seconds", "1"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode != 0
        assert "demo: a demo is already running" in second.stderr, second.stdout + second.stderr
        assert f"pid {first.proc.pid}" in second.stderr
        assert "connected" not in second.stdout and "Traceback" not in second.stderr
        first.wait_for("demo: connected")
        daemon = first.daemon_pid()
        first.proc.send_signal(signal.SIGTERM)
        output = first.finish()
        assert first.proc.returncode == 128 + signal.SIGTERM, output
        assert "exit code 69" not in output and not alive(daemon)
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that another user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="wattgate-demo-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="runs the demo as another user: needs root and setpriv")
@pytest.mark.parametrize("left_by_root", [False, True], ids=["read-only checkout", "sudo run/"])
def test_a_demo_that_cannot_write_run_says_so_in_one_line(
    shared_dir: Path, left_by_root: bool
) -> None:
    """Run as nobody: in a checkout it cannot write, or in its own checkout after `sudo make
    demo` left a root-owned run/ with a board in it. Both ended in a PermissionError
    traceback."""
    if left_by_root:
        os.chown(shared_dir, 65534, 65534)
        (shared_dir / "run").mkdir()
        boards.materialize("rk3588", shared_dir / "run/board")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    res = subprocess.run([*as_nobody, *DEMO, "--seconds", "1"], cwd=shared_dir,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo: cannot write"), res.stderr
    assert str(shared_dir / "run") in lines[0]


def test_a_daemon_that_dies_midway_is_reported_with_its_exit_code(tmp_path: Path) -> None:
    """A crashed or OOM-killed daemon ended the demo in a ClientError traceback."""
    with demo_run(tmp_path) as run:
        os.kill(run.daemon_pid(), signal.SIGKILL)
        output = run.finish()
        assert run.proc.returncode == 1, output
        assert "Traceback" not in output, output
        said = re.search(r"^demo: .*daemon.* exited with code -9 \(SIGKILL\)$", output, re.M)
        assert said, output
        assert not demo_socket(tmp_path).parent.exists()


def test_a_reader_that_goes_away_stops_the_demo_quietly(tmp_path: Path) -> None:
    """`make demo | head -3`: the demo ended in a BrokenPipeError traceback."""
    proc = subprocess.Popen([*DEMO, "--seconds", "120"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        while b"demo: connected" not in proc.stdout.readline():
            assert proc.poll() is None
        daemon = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
        proc.stdout.close()  # the reader goes away; the demo's next result meets a broken pipe
        err = proc.stderr.read().decode()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert "restored" in err  # the daemon was stopped the clean way
    assert not alive(daemon)


def test_the_demo_runs_in_a_checkout_too_deep_for_a_socket_path(tmp_path: Path) -> None:
    """A Unix socket path holds at most 107 bytes; <checkout>/run/wattgate.sock did not fit
    in a deep CI workspace and the daemon refused to start."""
    deep = tmp_path / ("x" * 60) / ("y" * 60)
    deep.mkdir(parents=True)
    res = subprocess.run([*DEMO, "--seconds", "0.5"], cwd=deep, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "--- summary ---" in res.stdout
    socket = demo_socket(deep)
    assert len(os.fsencode(socket)) <= 107
    assert not socket.parent.exists()  # the socket's directory went with the demo
    assert (deep / "run/board").is_dir()  # everything else stays in run/
