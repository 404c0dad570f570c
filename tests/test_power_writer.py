"""A sysfs write that blocks holds up neither the event loop nor the capture thread.

On a real board a store can take long: writing "on" to power/control resumes the device
synchronously (Documentation/power/runtime_pm.rst, pm_runtime_forbid), a devfreq governor
change waits for the devfreq mutex a busy driver holds. Here a knob of a fake RK3588 tree
is replaced by a named pipe, whose open blocks until the other end opens it: a store that
hangs until the test lets it through. The writer reads a knob before it writes it (no
write when the value is there already), so it blocks at that read first; the test answers
it with the value the file held, then takes the value written.

The pipe takes the place of the NPU's devfreq governor after the start has written it:
its original is in the journal by then, so no read for the journal meets the pipe, and
the restore at the end reads the regular file the test puts back.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import DaemonProcess, FaceVideo, tree_snapshot
from tests.fixtures.boards import materialize
from wattgate.client import Client
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController
from wattgate.drivers.sysfs import OsIO

CPU = "devices/system/cpu/cpufreq"
NPU = "class/devfreq/fdab0000.npu"
NPU_DEV = "devices/platform/fdab0000.npu"
GOVERNOR = f"{NPU}/governor"
CONTROL = f"{NPU_DEV}/power/control"
BIG_MAX = f"{CPU}/policy4/scaling_max_freq"
# Hang guards only (the machine is shared): never a measure of how long anything took.
HANG_S = 60.0
POLL_S = 0.02
# The start writes "powersave" to the NPU governor (so its original is journaled); "loud"
# wakes the NPU (power/control "on", first in write_order), sets the governor (the pipe),
# then raises the CPU ceilings (after it). "half" differs from "loud" in the ceilings only.
PROFILES = {
    "calm": {"npu_governor": ["powersave"], "cpu_max_khz": "0%"},
    "loud": {"npu_governor": ["performance"], "cpu_max_khz": "100%", "npu_runtime_pm": "on"},
    "half": {"npu_governor": ["performance"], "cpu_max_khz": "50%", "npu_runtime_pm": "on"},
}


def wait_until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + HANG_S
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {HANG_S} s: {what}")
        time.sleep(POLL_S)
    return result


def read(root: Path, attribute: str) -> str:
    return (root / attribute).read_text().strip()


@contextmanager
def stalled(root: Path, attribute: str) -> Iterator[Callable[[], str]]:
    """``attribute`` as a named pipe: the writer's read and store of it block until
    ``release()`` answers the read with the text the file held and takes the text stored;
    the file is then put back, holding that text, with its mode. Released at the end if the
    test did not (a failed test must not leave the writer blocked for its teardown)."""
    path = Path(os.path.realpath(root / attribute))
    held, mode = path.read_text(), os.stat(path).st_mode & 0o7777
    path.unlink()
    os.mkfifo(path)
    os.chmod(path, mode)
    released: list[str] = []

    def release() -> str:
        if not released:
            answer(path, held)
            stored = take(path)
            path.unlink()
            path.write_text(stored)
            os.chmod(path, mode)
            released.append(stored)
        return released[0]

    try:
        yield release
    finally:
        if not released:
            try:
                release()
            except AssertionError:  # nobody came to the pipe: put the file back as it was
                path.unlink()
                path.write_text(held)
                os.chmod(path, mode)


def answer(path: Path, text: str) -> None:
    """Give the reader blocked on the pipe ``text`` (a non-blocking open fails with ENXIO
    until a reader is there), and close once it has read it all (FIONREAD, pipe(7)): a
    reader opened after, to take the store, must not get it instead."""
    def opened() -> int:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            return 0
    fd = wait_until(opened, f"a reader of {path}")
    try:
        os.write(fd, text.encode())
        wait_until(lambda: unread(fd) == 0, f"the reader of {path} to read")
    finally:
        os.close(fd)


def unread(fd: int) -> int:
    """Bytes in the pipe of ``fd`` not read yet."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0])


def take(path: Path) -> str:
    """What the writer stores into the pipe: read until it closes its end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer's open through
    data = b""
    try:
        def closed() -> bool:
            nonlocal data
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:  # opened, nothing written yet
                return False
            data += chunk
            return bool(data) and not chunk  # EOF after the text: the store is done
        wait_until(closed, f"a store into {path}")
    finally:
        os.close(fd)
    return data.decode()


# -- the daemon ---------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_stuck_write_stalls_neither_the_socket_nor_the_pipeline(
    start_daemon: Callable[..., DaemonProcess], face_video: FaceVideo, tmp_path: Path
) -> None:
    """A client pins "loud" while the NPU governor's store hangs: status is answered, the
    pipeline goes on counting frames, the knob before it in write_order is written; when
    the store returns, the rest lands, and the exit gives every original back.

    Before, the write ran on the event loop under the controller's lock: the pin's reply
    never came (the client timed out), and the capture thread blocked on the lock."""
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    daemon = start_daemon(
        camera={"source": str(face_video.path), "loop": True},
        power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal"),
               "profile": "calm"},
        profiles=PROFILES,
    )
    with daemon.connect() as client, stalled(root, GOVERNOR) as release:
        client.settimeout(HANG_S)
        assert read(root, CONTROL) == "auto"
        big_max_idle = read(root, BIG_MAX)
        client.request("profile", set="loud")
        wait_until(lambda: read(root, CONTROL) == "on", "power/control on, before the pipe")

        def governor(client: Client) -> dict[str, Any]:
            knob: dict[str, Any] = client.request("status")["power"]["knobs"][GOVERNOR]
            return knob
        # status answers while the store hangs; the knob being written is not read
        wait_until(lambda: "value" not in governor(client), "the governor pending")
        assert governor(client)["target"] == "performance"
        assert read(root, BIG_MAX) == big_max_idle  # after the pipe in write_order: waits
        frames = client.request("status")["pipeline"]["frames"]
        wait_until(lambda: client.request("status")["pipeline"]["frames"] > frames,
                   "frames counted while the store hangs")
        with daemon.connect() as other:  # a new client is greeted too
            assert other.hello["profile"]["name"] == "loud"

        assert release() == "performance\n"
        wait_until(lambda: governor(client).get("value") == "performance", "the store lands")
        top = read(root, f"{CPU}/policy4/cpuinfo_max_freq")
        wait_until(lambda: read(root, BIG_MAX) == top, "the ceilings after it")
    assert daemon.stop() == 0, daemon.log()
    assert tree_snapshot(root) == before


# -- the controller --------------------------------------------------------------------------


class Recording(OsIO):
    """The plain file I/O, noting every store (attribute path, text) in order."""

    def __init__(self) -> None:
        self.stores: list[tuple[str, str]] = []

    def write_text(self, path: Path, data: str) -> None:
        super().write_text(path, data)
        self.stores.append((str(path), data.strip()))


def controller(tmp_path: Path, root: Path, io: OsIO,
               profiles: Mapping[str, Any] = PROFILES) -> PowerController:
    cfg = parse_config({
        "power": {"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal"),
                  "profile": "calm"},
        "profiles": profiles,
    })
    return PowerController(cfg, io=io)


def background(task: Callable[[], object]) -> threading.Thread:
    """``task`` started in a thread of its own (a daemon thread: a hang fails the test,
    not its teardown)."""
    thread = threading.Thread(target=task, daemon=True)
    thread.start()
    return thread


def in_thread(task: Callable[[], object]) -> threading.Thread:
    """``task`` run in a thread of its own, waited for HANG_S at most (a hang guard)."""
    thread = background(task)
    thread.join(HANG_S)
    return thread


@pytest.mark.timeout(300)
def test_the_latest_wanted_state_wins_over_a_stuck_write(tmp_path: Path) -> None:
    """Twenty pins while the governor's store hangs: none waits for it, and once it returns
    the board holds what the last pin wants, exactly what a pin straight to it gives; the
    ceilings in between are never written."""
    root = materialize("rk3588", tmp_path / "sys")
    io = Recording()
    pc = controller(tmp_path, root, io)
    pc.start(0.0)
    with stalled(root, GOVERNOR) as release:
        # before, pin() wrote on the caller's thread and blocked at the pipe
        assert not in_thread(lambda: pc.pin("loud", "uid 0")).is_alive(), "pin() blocked"
        wait_until(lambda: "value" not in pc.status()["knobs"][GOVERNOR], "the governor pending")
        assert not pc.settle(0.05)  # the store cannot return before the pipe is answered
        for i in range(20):
            pc.pin(("loud", "half")[i % 2], "uid 0")  # ends with "half"
        stores = len(io.stores)
        assert release() == "performance\n"
        assert pc.settle(HANG_S)
    after = [store for store in io.stores[stores:]
             if store[0] == os.path.realpath(root / BIG_MAX)]
    wanted_half = str(pc.wanted[BIG_MAX])
    assert after == [(os.path.realpath(root / BIG_MAX), wanted_half)]

    reference_root = materialize("rk3588", tmp_path / "reference" / "sys")
    reference = controller(tmp_path / "reference", reference_root, OsIO())
    reference.start(0.0)
    reference.pin("half", "uid 0")
    assert reference.settle(HANG_S)
    assert tree_snapshot(root) == tree_snapshot(reference_root)
    reference.stop()
    pc.stop()
    assert tree_snapshot(root) == tree_snapshot(reference_root)  # both given back


class Hanging(OsIO):
    """The plain file I/O, but a store of ``value`` into ``path`` hangs until ``go`` is set:
    a driver whose store never returns, which no file on this machine does (a pipe would
    hand the store to the restore's read of the same attribute)."""

    def __init__(self, path: Path, value: str) -> None:
        self.path, self.value = path, value
        self.entered, self.go = threading.Event(), threading.Event()

    def write_text(self, path: Path, data: str) -> None:
        if os.path.realpath(path) == str(self.path) and data.strip() == self.value:
            self.entered.set()
            self.go.wait(HANG_S)
        super().write_text(path, data)


def stuck_in_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, dict[str, Any], Hanging, PowerController]:
    """A started controller on a fake RK3588 tree (and the tree as it was) whose writer is
    stuck in the governor's store of "performance" (a pin of "loud"), with STOP_JOIN_S
    made short: a stop gives the writer up at once."""
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    io = Hanging(Path(os.path.realpath(root / GOVERNOR)), "performance")
    pc = controller(tmp_path, root, io)
    pc.start(0.0)
    pc.pin("loud", "uid 0")
    assert io.entered.wait(HANG_S)
    monkeypatch.setattr("wattgate.daemon.power.STOP_JOIN_S", 0.1)
    return root, before, io, pc


@pytest.mark.timeout(300)
def test_stop_does_not_wait_forever_for_a_stuck_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """stop() gives the writer STOP_JOIN_S, restores the rest, and keeps the stuck knob's
    original in the journal: the store lands after the exit, the next start gives it back."""
    root, before, io, pc = stuck_in_a_store(tmp_path, monkeypatch)
    assert not in_thread(pc.stop).is_alive(), "stop() waited for the stuck write"
    assert "has not returned" in caplog.text
    io.go.set()  # the store lands after the exit
    wait_until(lambda: read(root, GOVERNOR) == "performance", "the late store")
    journal = tmp_path / "journal" / "sysfs-journal.json"
    assert GOVERNOR in journal.read_text()
    assert tree_snapshot(root) != before
    again = controller(tmp_path, root, OsIO())
    again.start(10.0)  # the crash restore gives the governor back
    again.stop()
    assert tree_snapshot(root) == before


class Gated(OsIO):
    """The plain file I/O, but the NPU governor's stores wait for the test while ``hold``
    is set, one ``go`` each, and the big cluster's ceiling is refused while ``refusing``
    is set (EBUSY, as a busy driver answers)."""

    def __init__(self, governor: Path, ceiling: Path) -> None:
        self.governor, self.ceiling = str(governor), str(ceiling)
        self.refusing, self.hold = True, False
        self.entered, self.go = threading.Semaphore(0), threading.Semaphore(0)

    def write_text(self, path: Path, data: str) -> None:
        real = os.path.realpath(path)
        if real == self.ceiling and self.refusing:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        if real == self.governor and self.hold:
            self.entered.release()
            assert self.go.acquire(timeout=HANG_S)
        super().write_text(path, data)


@pytest.mark.timeout(300)
def test_a_retry_in_a_batch_a_newer_request_cuts_short_is_not_lost(tmp_path: Path) -> None:
    """A refused ceiling due again rides in the writer's next batch, after the governor.
    A newer pin cuts that batch short after the governor: the retry must come in a later
    batch, not be dropped (it was: the ceiling kept its original for good)."""
    root = materialize("rk3588", tmp_path / "sys")
    io = Gated(Path(os.path.realpath(root / GOVERNOR)), Path(os.path.realpath(root / BIG_MAX)))
    # calm_b: the same ceiling as calm, another governor: a pin changes the governor only
    pc = controller(tmp_path, root, io, {
        **PROFILES, "calm_b": {**PROFILES["calm"], "npu_governor": ["performance"]}})
    pc.start(0.0)
    assert BIG_MAX in pc.failed  # refused: tried again after one tick
    io.refusing, io.hold = False, True
    pc.pin("calm_b", "uid 0")  # first batch: the governor only, held
    assert io.entered.acquire(timeout=HANG_S)
    pc.tick(1.0)  # the ceiling's retry is due: it goes with the next batch
    pc.pin("calm", "uid 0")  # the next batch: the governor back, then the ceiling's retry
    io.go.release()
    assert io.entered.acquire(timeout=HANG_S)  # that batch, at its governor
    pc.pin("calm_b", "uid 0")  # newer: the batch stops after the governor
    io.hold = False
    io.go.release()
    for now in (2.0, 3.0, 4.0, 5.0):
        assert pc.settle(HANG_S)
        pc.tick(now)
    assert pc.settle(HANG_S)
    assert read(root, BIG_MAX) == pc.wanted[BIG_MAX]
    assert BIG_MAX not in pc.failed
    pc.stop()
