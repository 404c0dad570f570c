"""`make demo`: the daemon on a generated scene, live results from a client, then a summary.

Everything lives under ./run/ (socket, state, config), so the demo needs no root and
leaves nothing elsewhere. Runs the real daemon as a child process and the real client.

Ctrl-C, SIGTERM (`timeout make demo`) and SIGHUP (the terminal closed) end the demo the
same way: the daemon is stopped with SIGTERM, so it restores the board, and the demo
exits 128 + the signal's number without a traceback. SIGTERM and SIGHUP used to kill the
demo at once and leave the daemon running on its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Optional

from wattgate import boards
from wattgate.cli import format_message, format_status
from wattgate.client import Client, ClientError

DEMO_BOARD = "rk3588"
DEMO_CONFIG = """\
# Written by `make demo`; see config.toml for every key.
[daemon]
socket = "{run}/wattgate.sock"
state_dir = "{run}/state"

[camera]
source = "synthetic:office"

[power]
# A simulated {board} board: a fake sysfs tree laid out like the real one.
sysfs_root = "{sysfs}"
journal_dir = "{run}/journal"
board = "{board}"
"""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_TIMEOUT_S = 10.0  # the daemon's own stop restores the board; SIGKILL only past this


class Interrupted(Exception):
    """One of STOP_SIGNALS arrived: the demo stops its daemon and exits 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise Interrupted(signum)


def stop_daemon(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM the daemon and wait for it; its exit code.

    The stop signals are ignored meanwhile: a second Ctrl-C must not abandon a daemon
    that is still restoring the board. The wait is bounded, then the daemon is killed.
    """
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def refuse_if_served(path: Path) -> None:
    """Exit when a daemon already answers on the demo's socket (a second `make demo`, or
    one left over): the demo would rewrite the board under it and show its results.

    Only a socket nobody listens on is free: a daemon at its max_clients answers `busy`
    instead of hello, and one still loading its model sends no hello in time."""
    try:
        with Client(str(path), timeout=2.0):
            pass
    except ClientError as exc:
        if exc.code == "unavailable":
            return
    raise SystemExit(f"demo: a wattgate daemon already serves {path} (another `make demo`?); "
                     "stop it first")


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> Client:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"demo: the daemon exited with code {proc.returncode}")
        try:
            return Client(str(path))
        except ClientError:
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: no socket at {path} after {timeout:.0f} s") from None
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to watch")
    args = parser.parse_args()
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    try:
        return demo(args.seconds)
    except Interrupted as exc:
        print(f"demo: stopped by {exc}", file=sys.stderr, flush=True)
        return 128 + exc.signum


def demo(seconds: float) -> int:
    """The demo proper; main() turns a stop signal into a clean exit."""
    run = Path("run").resolve()
    run.mkdir(exist_ok=True)
    socket_path = run / "wattgate.sock"
    refuse_if_served(socket_path)
    sysfs = run / "board"
    shutil.rmtree(sysfs, ignore_errors=True)
    boards.materialize(DEMO_BOARD, sysfs)
    config = run / "demo.toml"
    config.write_text(DEMO_CONFIG.format(run=run, sysfs=sysfs, board=DEMO_BOARD))
    print(f"demo: starting the daemon with {config}", flush=True)
    proc: Optional[subprocess.Popen[bytes]] = None
    code = 1
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wattgate.cli", "run", "--config", str(config)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        with wait_for_socket(socket_path, proc, 30.0) as client:
            print(f"demo: connected; model {client.hello['model']['name']}", flush=True)
            client.request("subscribe", topics=["results"])
            client.settimeout(0.5)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    print(format_message(next(client.messages())), flush=True)
                except ClientError as exc:
                    if exc.code != "timeout":
                        raise
            status = client.request("status")
        print("\n--- summary ---")
        print(format_status(status))
    finally:
        if proc is not None:
            code = stop_daemon(proc)
    print(f"demo: daemon stopped with exit code {code}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
