"""`make demo`: the daemon on a generated scene, live results from a client, then a summary.

Everything lives under ./run/ (board, state, config) but the socket, which goes in a
fresh directory under $XDG_RUNTIME_DIR or /tmp: a Unix socket's path holds at most 107
bytes, and <checkout>/run/wattgate.sock did not fit in a deep checkout. That directory is
removed at the end, so the demo needs no root and leaves nothing elsewhere. Runs the real
daemon as a child process and the real client.

run/demo.lock is held for the whole demo, before anything in run/ is touched, and by its
daemon too: a second demo in the same checkout (or one beside a daemon whose demo was
killed) says a demo is running and exits, instead of rewriting the board under it.

Ctrl-C, SIGTERM (`timeout make demo`) and SIGHUP (the terminal closed) end the demo the
same way: the daemon is stopped with SIGTERM, so it restores the board, and the demo
exits 128 + the signal's number without a traceback. SIGTERM and SIGHUP used to kill the
demo at once and leave the daemon running on its own. A reader that goes away (`make demo
| head`) stops it the same way, quietly, with exit 0 as `wattgate` itself does.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from wattgate import boards
from wattgate.cli import (
    discard_unwritten_output,
    escape_what_stdout_cannot_show,
    format_message,
    format_status,
)
from wattgate.client import Client, ClientError, exit_status
from wattgate.stop_signals import StopSignal, raised_by

DEMO_BOARD = "rk3588"
DEMO_CONFIG = """\
# Written by `make demo`; see config.toml for every key.
[daemon]
socket = "{socket}"
state_dir = "{run}/state"

[camera]
source = "synthetic:office"

[power]
# A simulated {board} board: a fake sysfs tree laid out like the real one.
sysfs_root = "{sysfs}"
journal_dir = "{run}/journal"
board = "{board}"
"""


LOCK_NAME = "demo.lock"
SOCKET_NAME = "wattgate.sock"
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes with its NUL
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_TIMEOUT_S = 10.0  # the daemon's own stop restores the board; SIGKILL only past this


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


def unwritable(exc: OSError, run: Path) -> SystemExit:
    """One line for a run/ this user cannot write: a read-only checkout, or a run/ left
    by `sudo make demo` (its board and lock owned by root)."""
    where = exc.filename or run
    remove = f"remove {run} (with sudo if `sudo make demo` made it) or " if run.exists() else ""
    return SystemExit(f"demo: cannot write {where}: {exc.strerror or exc}; {remove}run the "
                      "demo from a writable copy")


def read_holder(lock: int) -> dict[str, Any]:
    """What the demo holding run/demo.lock wrote in it (pid, daemon, socket); {} if
    nothing readable yet."""
    try:
        data = json.loads(os.pread(lock, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_holder(lock: int, **holder: Any) -> None:
    os.ftruncate(lock, 0)
    os.pwrite(lock, json.dumps(holder).encode(), 0)


def already_running(run: Path, lock: int) -> str:
    holder = read_holder(lock)
    text = f"demo: a demo is already running in {run}"
    if holder.get("pid"):
        text += f" (pid {holder['pid']})"
    if holder.get("socket"):
        daemon = f" (pid {holder['daemon']})" if holder.get("daemon") else ""
        text += f"; its daemon{daemon} already serves {holder['socket']}"
    return text + "; stop it first"


@contextlib.contextmanager
def demo_lock(run: Path) -> Iterator[int]:
    """run/demo.lock, flocked for the whole demo; SystemExit if another demo holds it.

    Two demos started at once both found no daemon, both rewrote run/board, and the
    second showed the first one's daemon as its own. The daemon is given the lock too, so
    a daemon left running by a demo that was killed keeps its board."""
    try:
        run.mkdir(exist_ok=True)
        lock = os.open(run / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise unwritable(exc, run) from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(already_running(run, lock)) from None
        yield lock
    finally:
        os.close(lock)


@contextlib.contextmanager
def socket_directory() -> Iterator[Path]:
    """A fresh private directory for the socket, with a path short enough for one;
    removed at the end. $XDG_RUNTIME_DIR when it can take it, else /tmp."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    path: Optional[str] = None
    longest = len(f"/wattgate-demo-XXXXXXXX/{SOCKET_NAME}")
    if runtime and len(os.fsencode(runtime)) + longest <= SOCKET_PATH_MAX:
        with contextlib.suppress(OSError):
            path = tempfile.mkdtemp(prefix="wattgate-demo-", dir=runtime)
    if path is None:
        path = tempfile.mkdtemp(prefix="wattgate-demo-", dir="/tmp")
    try:
        yield Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def describe_exit(code: int) -> str:
    return f"code {exit_status(code)}"


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
            raise SystemExit(f"demo: the daemon exited with {describe_exit(proc.returncode)}")
        try:
            return Client(str(path))
        except ClientError:
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: no socket at {path} after {timeout:.0f} s") from None
            time.sleep(0.1)


def main() -> int:
    escape_what_stdout_cannot_show()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to watch")
    args = parser.parse_args()
    try:
        with raised_by(STOP_SIGNALS):
            return demo(args.seconds)
    except StopSignal as stopped:
        print(f"demo: stopped by {stopped}", file=sys.stderr, flush=True)
        return stopped.exit_status
    except BrokenPipeError:
        # the reader went away (`make demo | head`); the daemon has been stopped on the way
        # out. What is left in stdout's buffer goes nowhere, not into a second traceback.
        discard_unwritten_output()
        return 0


def demo(seconds: float) -> int:
    """The demo proper; main() turns a stop signal into a clean exit."""
    run = Path("run").resolve()
    with demo_lock(run) as lock, socket_directory() as socket_dir:
        socket_path = socket_dir / SOCKET_NAME
        # a daemon that an earlier demo, whose socket was run/wattgate.sock, left running
        refuse_if_served(run / SOCKET_NAME)
        write_holder(lock, pid=os.getpid(), socket=str(socket_path))
        try:
            config = set_up(run, socket_path)
        except OSError as exc:
            raise unwritable(exc, run) from None
        return watch(config, socket_path, lock, seconds)


def set_up(run: Path, socket_path: Path) -> Path:
    """A fresh board under run/ and the daemon's config; the config's path."""
    sysfs = run / "board"
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(sysfs)  # not ignore_errors: a board it may not remove is said so
    boards.materialize(DEMO_BOARD, sysfs)
    config = run / "demo.toml"
    config.write_text(DEMO_CONFIG.format(run=run, socket=socket_path, sysfs=sysfs,
                                         board=DEMO_BOARD))
    return config


def watch(config: Path, socket_path: Path, lock: int, seconds: float) -> int:
    """Start the daemon, show what a client gets, stop it; the demo's exit code."""
    print(f"demo: starting the daemon with {config}", flush=True)
    proc: Optional[subprocess.Popen[bytes]] = None
    lost: Optional[ClientError] = None
    code = 1
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wattgate.cli", "run", "--config", str(config)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            pass_fds=(lock,),
        )
        write_holder(lock, pid=os.getpid(), daemon=proc.pid, socket=str(socket_path))
        try:
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
        except ClientError as exc:  # the daemon went away: said below, with its exit code
            lost = exc
        else:
            print("\n--- summary ---")
            print(format_status(status))
    finally:
        if proc is not None:
            code = stop_daemon(proc)
    if lost is not None:
        print(f"demo: lost the daemon ({lost.code}); it exited with {describe_exit(code)}",
              file=sys.stderr, flush=True)
        return 1
    print(f"demo: daemon stopped with exit code {code}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
