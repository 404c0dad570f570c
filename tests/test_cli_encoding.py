"""Human output on a terminal that is not UTF-8 (a Latin-1 or ASCII locale; PYTHONIOENCODING
stands for it here): what the terminal cannot show is printed as a backslash escape, and the
command does its work and exits 0. It died with a UnicodeEncodeError traceback on the "°C"
of every real board's temperatures and on a label in another script. --json stays exact.

Real daemons: a fake RK3588 sysfs tree with thermal zones, BlazeFace with a labels file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import DaemonProcess, FaceVideo, pinnable_board
from tests.test_cli_pipes import entry_point
from tests.test_daemon import wait_status

StartDaemon = Callable[..., DaemonProcess]
ENCODINGS = ["ascii", "latin-1"]


def run_in(encoding: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """`wattgate ARGS` writing to a terminal of this encoding."""
    return subprocess.run([str(entry_point()), *args], capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONIOENCODING": encoding})


@pytest.fixture
def board_daemon(start_daemon: StartDaemon, tmp_path: Path) -> Any:
    """A daemon on a fake RK3588 whose status shows its thermal zones' temperatures."""
    daemon = start_daemon(config=pinnable_board(tmp_path, camera={"source": "synthetic:empty"}))
    with daemon.connect() as client:
        status = wait_status(client, lambda s: bool((s.get("power") or {}).get("temperatures")))
    assert status["power"]["temperatures"], status.get("power")
    yield daemon
    assert daemon.stop() == 0


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_status_shows_degrees_on_a_terminal_without_them(
    board_daemon: DaemonProcess, encoding: str
) -> None:
    run = run_in(encoding, "status", "--socket", str(board_daemon.socket))
    assert (run.returncode, run.stderr) == (0, b""), run.stderr.decode(errors="replace")
    out = run.stdout.decode(encoding)
    assert ("\\xb0C" if encoding == "ascii" else "°C") in out, out
    assert "temps" in out


def test_status_json_on_an_ascii_terminal_is_exact(board_daemon: DaemonProcess) -> None:
    run = run_in("ascii", "status", "--json", "--socket", str(board_daemon.socket))
    assert (run.returncode, run.stderr) == (0, b"")
    assert json.loads(run.stdout.decode("ascii"))["power"]["temperatures"]


def test_a_label_in_another_script_is_escaped_not_a_crash(
    start_daemon: StartDaemon, face_video: FaceVideo, tmp_path: Path
) -> None:
    """BlazeFace names its detections after the first line of model.labels: "顔", which
    neither Latin-1 nor ASCII can show."""
    labels = tmp_path / "labels.txt"
    labels.write_text("顔\n", encoding="utf-8")
    daemon = start_daemon(camera={"source": str(face_video.path), "realtime": False},
                          gate={"enabled": False}, model={"labels": str(labels)})
    deadline = time.monotonic() + 60
    with daemon.connect() as client:
        while not any(e["kind"] == "detection" for e in
                      client.request("events", since=0, limit=1000)["events"]):
            assert time.monotonic() < deadline, "no detection event"
            time.sleep(0.2)
    for encoding in ENCODINGS:
        run = run_in(encoding, "events", "--socket", str(daemon.socket))
        assert (run.returncode, run.stderr) == (0, b""), run.stderr.decode(errors="replace")
        assert 'labels=["\\u9854"]' in run.stdout.decode(encoding), run.stdout
    assert daemon.stop() == 0


def test_the_demo_summary_on_an_ascii_terminal(tmp_path: Path) -> None:
    """`make demo` ends with the status of its board, temperatures and all."""
    run = subprocess.run([sys.executable, "-m", "wattgate.demo", "--seconds", "1"],
                         cwd=tmp_path, capture_output=True, timeout=120,
                         env={**os.environ, "PYTHONIOENCODING": "ascii"})
    out = run.stdout.decode("ascii")
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    assert "--- summary ---" in out and "\\xb0C" in out, out
