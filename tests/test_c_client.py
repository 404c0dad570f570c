"""The C example client, written from docs/protocol.md alone, against a real daemon."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from tests.conftest import DaemonProcess

StartDaemon = Callable[..., DaemonProcess]

SOURCE = Path(__file__).resolve().parent.parent / "examples" / "c" / "wattgate-watch.c"
CFLAGS = ["-std=c99", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror", "-O2"]


def build(tmp_path: Path) -> Path:
    gcc = shutil.which("gcc")
    assert gcc is not None, "gcc not found: the project's setup installs it (needed for this test)"
    binary = tmp_path / "wattgate-watch"
    built = subprocess.run(
        [gcc, *CFLAGS, "-o", str(binary), str(SOURCE)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    assert built.stderr == ""  # compiles clean
    return binary


def test_c_client_prints_results(start_daemon: StartDaemon, tmp_path: Path) -> None:
    binary = build(tmp_path)
    # Gate off, file read as fast as the model goes: results at the pipeline's full rate.
    daemon = start_daemon(gate={"enabled": False}, camera={"realtime": False})
    daemon.connect().close()  # the socket is up and the daemon said hello
    run = subprocess.run(
        [str(binary), "-n", "3", str(daemon.socket)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr + daemon.log()
    lines = run.stdout.splitlines()
    assert len(lines) == 3, run.stdout
    results = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) and r["class"] == "result" for r in results)
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert daemon.stop() == 0


def test_c_client_fails_clearly_without_a_daemon(tmp_path: Path) -> None:
    binary = build(tmp_path)
    path = tmp_path / "nobody.sock"
    run = subprocess.run([str(binary), str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stdout == ""
    assert "cannot connect" in run.stderr and str(path) in run.stderr
