"""Shared fixtures: real video files, a real daemon process, real socket clients."""

from __future__ import annotations

import grp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import cv2
import numpy as np
import pytest

from bench.common import NotifyListener, connect_when_ready
from wattgate.client import Client, exit_status
from wattgate.config import load_config


def _skimage_data() -> Path:
    """scikit-image's bundled data directory (a regular package: its __file__ is set)."""
    init = __import__("skimage").__file__
    assert init is not None
    return Path(init).parent / "data"


SKIMAGE_DATA = _skimage_data()


def skimage_image(name: str) -> np.ndarray[Any, Any]:
    """A BGR image from scikit-image's bundled data (astronaut.png, camera.png, coffee.png)."""
    image = cv2.imread(str(SKIMAGE_DATA / name), cv2.IMREAD_COLOR)
    assert image is not None, name
    return image


# The astronaut's face in skimage's 512x512 astronaut.png, pixels (x0, y0, x1, y1), as
# OpenCV's Haar face cascade finds it.
ASTRONAUT_FACE = (177, 66, 272, 161)


def tree_snapshot(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry under root: files by content, links by target, dirs, with modes.

    Two equal snapshots mean a sysfs tree was given back exactly as it was found.
    """
    seen: dict[str, tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            mode = oct(os.lstat(path).st_mode)
            if path.is_symlink():
                seen[rel] = ("link " + mode, os.readlink(path).encode())
            elif path.is_dir():
                seen[rel] = ("dir " + mode, b"")
            else:
                seen[rel] = ("file " + mode, path.read_bytes())
    return seen


@dataclass(frozen=True)
class FaceVideo:
    path: Path
    fps: float
    frames: int
    face_frames: range  # frames in which the face is in view
    face_box: tuple[int, int, int, int]  # where the face is in those frames (pixels)


def write_face_video(path: Path, fps: float = 30.0, frames: int = 120) -> FaceVideo:
    """A 640x480 video: an empty noisy room, then the astronaut's face appears and stays.

    The face comes in after 5/8 of the clip: 2.5 s at the defaults, after the gate's
    2 s calibration, which treats whatever changes while it learns the scene as scenery.
    Written with cv2.VideoWriter (MJPG in AVI decodes everywhere OpenCV does).
    """
    rng = np.random.default_rng(7)
    room = np.full((480, 640, 3), 90, np.uint8)
    cv2.rectangle(room, (40, 300), (600, 470), (60, 70, 80), -1)
    face = cv2.resize(skimage_image("astronaut.png")[0:200, 110:310], (200, 200))
    x, y = 380, 80
    appear = frames * 5 // 8
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (640, 480))
    assert writer.isOpened()
    for i in range(frames):
        frame = room.copy()
        if i >= appear:
            frame[y : y + 200, x : x + 200] = face
        noise = rng.integers(-3, 4, frame.shape, dtype=np.int16)
        writer.write(np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    writer.release()
    # The face inside the pasted 200x200 crop of astronaut.png[0:200, 110:310].
    fx0, fy0, fx1, fy1 = ASTRONAUT_FACE
    box = (x + fx0 - 110, y + fy0, x + fx1 - 110, y + fy1)
    return FaceVideo(path, fps, frames, range(appear, frames), box)


@pytest.fixture(scope="session")
def face_video(tmp_path_factory: pytest.TempPathFactory) -> FaceVideo:
    return write_face_video(tmp_path_factory.mktemp("video") / "face.avi")


def config_with_dropin(directory: Path, main: str, dropin: str,
                       name: str = "10-local.toml") -> tuple[Path, Path]:
    """config.toml holding `main` in directory, and one drop-in config.d/NAME holding
    `dropin`; returns both paths."""
    path = directory / "config.toml"
    path.write_text(main)
    (directory / "config.d").mkdir()
    extra = directory / "config.d" / name
    extra.write_text(dropin)
    return path, extra


def write_config(path: Path, run_dir: Path, **sections: Any) -> Path:
    """A config file with the socket and state under run_dir, plus the given tables; a
    list of tables (rules=[{...}, ...]) is written as an array of tables ([[rules]])."""
    # Power: an empty sysfs tree (no knobs, so power control stays off) and a private
    # journal, so no test daemon ever touches this machine's real /sys or /run.
    (run_dir / "sys").mkdir(exist_ok=True)
    tables: dict[str, dict[str, Any]] = {
        "daemon": {"socket": str(run_dir / "wattgate.sock"), "state_dir": str(run_dir / "state")},
        "power": {"sysfs_root": str(run_dir / "sys"), "journal_dir": str(run_dir / "journal")},
    }
    arrays = {name: values for name, values in sections.items() if isinstance(values, list)}
    for name, values in sections.items():
        if name not in arrays:
            tables.setdefault(name, {}).update(values)
    lines = []
    for name, values in tables.items():
        lines += toml_table(f"[{name}]", values)
    for name, entries in arrays.items():
        for values in entries:
            lines += toml_table(f"[[{name}]]", values)
    path.write_text("\n".join(lines) + "\n")
    return path


def toml_table(header: str, values: dict[str, Any]) -> list[str]:
    return [header, *(f"{key} = {toml_value(value)}" for key, value in values.items())]


def pinnable_board(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """The config of a daemon on a fake RK3588 (knobs: profiles can be pinned) whose
    admin_group is this user's own group (pinning needs uid 0 or that group: the tests run
    as any user), run from tmp_path/board, plus the given tables."""
    from tests.fixtures.boards import materialize

    run_dir = tmp_path / "board"
    run_dir.mkdir()
    materialize("rk3588", run_dir / "sys")
    daemon = {"admin_group": grp.getgrgid(os.getgid()).gr_name, **sections.pop("daemon", {})}
    return write_config(run_dir / "config.toml", run_dir, daemon=daemon, **sections)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


class DaemonProcess:
    """The real daemon as a child process, with its socket path and captured stderr."""

    def __init__(
        self,
        config: Path,
        socket_path: Path,
        log_path: Path,
        env: Optional[dict[str, str]] = None,
        argv: Optional[list[str]] = None,
    ) -> None:
        self.config = config
        self.socket = socket_path
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "wattgate.cli", "run", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def connect(self, timeout: float = 30.0) -> Client:
        """A client once the daemon has said hello; fails if the daemon dies first."""
        return connect_when_ready(self.proc, self.socket, self.log, timeout, poll=0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def wait(self, timeout: float = 30.0) -> int:
        """The exit code of a daemon expected to exit by itself."""
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Any]:
    """start_daemon(**sections) -> a running DaemonProcess; killed at teardown if still up.

    `argv(config)`, if given, is the command line to start it with instead of `wattgate
    run` (a wrapper that patches the daemon, systemd-socket-activate), given the config
    file written for it."""
    started: list[DaemonProcess] = []

    def start(
        config: Optional[Path] = None,
        env: Optional[dict[str, str]] = None,
        argv: Optional[Callable[[Path], list[str]]] = None,
        **sections: Any,
    ) -> DaemonProcess:
        run_dir = tmp_path / f"run{len(started)}"
        run_dir.mkdir()
        config = config or write_config(run_dir / "config.toml", run_dir, **sections)
        socket_path = Path(load_config(config).daemon.socket)
        daemon = DaemonProcess(config, socket_path, run_dir / "daemon.log", env,
                               argv(config) if argv is not None else None)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def daemon(start_daemon: Any) -> Iterator[DaemonProcess]:
    """A running daemon with the gate off, reading its file as fast as the model goes:
    results at the pipeline's full rate. Stopped at teardown, which must exit 0."""
    proc: DaemonProcess = start_daemon(gate={"enabled": False}, camera={"realtime": False})
    proc.connect().close()
    yield proc
    assert proc.stop() == 0


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    """A real NOTIFY_SOCKET, the AF_UNIX datagram socket systemd listens on."""
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    """A directory another user can traverse (pytest's tmp_path is root's, mode 0700), for
    tests that run_as another user."""
    base = Path(tempfile.mkdtemp(prefix="wattgate-test-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_as(uid: int, gid: int, task: Callable[[], str]) -> str:
    """What `task` returns when run in a forked child as uid:gid (no supplementary groups),
    or "raised ..." for what it raised: a real permission check needs another user. The
    child runs no pytest machinery and leaves with os._exit."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            if uid != os.geteuid():
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
            report = task()
        except BaseException as exc:
            report = f"raised {exc!r}"
        os.write(write_fd, report.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)  # as Popen's: -9 for SIGKILL
    if code != 0:  # it died before it could say: a signal
        return f"died: exit status {exit_status(code)}: {report!r}"
    return report
