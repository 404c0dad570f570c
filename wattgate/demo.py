"""`make demo`: the daemon on a generated scene, live results from a client, then a summary.

Everything lives under ./run/ (socket, state, config), so the demo needs no root and
leaves nothing elsewhere. Runs the real daemon as a child process and the real client.
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

    run = Path("run").resolve()
    run.mkdir(exist_ok=True)
    sysfs = run / "board"
    shutil.rmtree(sysfs, ignore_errors=True)
    boards.materialize(DEMO_BOARD, sysfs)
    config = run / "demo.toml"
    config.write_text(DEMO_CONFIG.format(run=run, sysfs=sysfs, board=DEMO_BOARD))
    socket_path = run / "wattgate.sock"
    print(f"demo: starting the daemon with {config}", flush=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wattgate.cli", "run", "--config", str(config)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        with wait_for_socket(socket_path, proc, 30.0) as client:
            print(f"demo: connected; model {client.hello['model']['name']}", flush=True)
            client.request("subscribe", topics=["results"])
            client.settimeout(0.5)
            deadline = time.monotonic() + args.seconds
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
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    print(f"demo: daemon stopped with exit code {code}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
