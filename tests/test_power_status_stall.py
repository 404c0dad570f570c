"""A knob whose read hangs holds up nothing but its own entry in the status.

On a real board a read of an attribute can block: a runtime-suspended device whose show()
resumes it or waits for its lock, a hung driver. The status reads each driven knob's
current value; read on the event loop, one such read froze the loop, and with it every
client (their requests, their subscriptions), the ticks and the watchdog pings. Here a
knob of a fake RK3588 tree is replaced by a named pipe: opening it for reading blocks
until a writer comes, as a read blocks in a driver.

The knob is the big cluster's ceiling, which the start has written already (nothing is
pending for it, so the status reads it), and no write of the tests touches. A reload reads
sysfs too: the reload tests hang the GPU's governor, which only a reload reads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import resource
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional, cast

import pytest

from tests.conftest import DaemonProcess, FaceVideo, run_as, tree_snapshot
from tests.fixtures.boards import materialize
from tests.test_power_writer import (
    BIG_MAX,
    GOVERNOR,
    HANG_S,
    PROFILES,
    Hanging,
    controller,
    in_thread,
    wait_until,
)
from wattgate.daemon.commands import Commands
from wattgate.daemon.power import PowerController
from wattgate.drivers.sysfs import OsIO


class Hung:
    """``attribute`` as a named pipe, with the mode the file had. A reader that opens it
    blocks until ``wait_for_reader`` lets its open through, then in read() until
    ``release`` answers it with the text the file held; the file is put back first, so any
    read after that finds it."""

    def __init__(self, root: Path, attribute: str) -> None:
        self.path = Path(os.path.realpath(root / attribute))
        self.held, self.mode = self.path.read_text(), os.stat(self.path).st_mode & 0o7777
        self.path.unlink()
        os.mkfifo(self.path)
        os.chmod(self.path, self.mode)
        self.fd: Optional[int] = None
        self.released = False

    def reader_waiting(self) -> bool:
        """Whether a reader is in the pipe (its open then returns; its read blocks)."""
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody has it open for reading yet
                return False
        return True

    def wait_for_reader(self) -> None:
        wait_until(self.reader_waiting, f"a read of {self.path}")

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.path.unlink()
        self.path.write_text(self.held)
        os.chmod(self.path, self.mode)
        if self.fd is not None:  # the blocked reader gets the text, then the end of it
            with suppress(BrokenPipeError):
                os.write(self.fd, self.held.encode())
            os.close(self.fd)
            self.fd = None


@contextmanager
def hung(root: Path, attribute: str) -> Iterator[Hung]:
    pipe = Hung(root, attribute)
    try:
        yield pipe
    finally:
        pipe.release()


def knob_read_threads() -> set[threading.Thread]:
    """Threads of this process that read knobs for the status (earlier tests' controllers'
    too, until they end)."""
    return {t for t in threading.enumerate() if t.name.startswith("wattgate-knob")}


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def started(tmp_path: Path, root: Path, io: Optional[OsIO] = None) -> PowerController:
    """A controller on the tree at ``root``, started: the ceiling written, nothing pending."""
    pc = controller(tmp_path, root, io or OsIO())
    pc.start(0.0)
    assert pc.settle(HANG_S)
    knob = pc.status()["knobs"][BIG_MAX]
    assert "error" not in knob and knob["value"] == knob["target"]
    return pc


# -- the controller --------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_status_waits_for_a_hung_read_a_bounded_time_and_reads_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Off the loop, status() waits READ_TIMEOUT_S for the hung read, shows the knob as
    timed out and the others as read; the statuses after it do not wait for it again nor
    start another read of it: the threads stay as they were. Its return is logged, and the
    knob reads again. The stop ends the reader threads."""
    caplog.set_level(logging.INFO, logger="wattgate.power")
    root = materialize("rk3588", tmp_path / "sys")
    others = knob_read_threads()  # other tests' controllers'
    pc = started(tmp_path, root)
    value = pc.status()["knobs"][BIG_MAX]["value"]
    statuses: list[dict[str, Any]] = []
    with hung(root, BIG_MAX) as pipe:
        before = knob_read_threads()
        asking = in_thread(lambda: statuses.append(pc.status()))
        assert not asking.is_alive(), "status() waited for the hung read"
        pipe.wait_for_reader()
        knobs = statuses[0]["knobs"]
        assert knobs[BIG_MAX] == {"value": None, "target": knobs[BIG_MAX]["target"],
                                  "original": knobs[BIG_MAX]["original"],
                                  "error": "read timed out after 1 s"}
        assert all(k["value"] == k["target"] for key, k in knobs.items() if key != BIG_MAX)
        threads = knob_read_threads()
        assert len(threads - before) <= 1  # the stuck read's at most: the others came back
        repeat = in_thread(lambda: statuses.extend(pc.status() for _ in range(20)))
        assert not repeat.is_alive()
        assert all(s["knobs"][BIG_MAX]["value"] is None for s in statuses)
        assert not knob_read_threads() - threads, "a thread more for each status"
        assert caplog.text.count("has not returned") == 1  # logged once, not per status
        pipe.release()
    wait_until(lambda: pc.status()["knobs"][BIG_MAX].get("value") == value, "read again")
    assert "error" not in pc.status()["knobs"][BIG_MAX]
    assert f"reading {BIG_MAX} returned after" in caplog.text
    pc.stop()
    assert not knob_read_threads() - others


@pytest.mark.timeout(300)
def test_the_loop_goes_on_while_a_status_awaits_a_hung_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `status` command awaits the knobs' reads on the loop (read_knobs) without
    holding it: another coroutine runs meanwhile, and a status() called on the loop itself
    neither reads nor waits (the knob shows the read before). The reply, once the read
    returns, has the knob's value. The read's time is made longer than the test, so nothing here
    depends on how long anything takes."""
    monkeypatch.setattr("wattgate.daemon.knobs.READ_TIMEOUT_S", HANG_S * 10)
    root = materialize("rk3588", tmp_path / "sys")
    pc = started(tmp_path, root)
    value = pc.status()["knobs"][BIG_MAX]["value"]
    daemon = SimpleNamespace(power=pc, status=lambda: {"power": pc.status()})
    commands = Commands(cast(Any, daemon))

    async def scenario(pipe: Hung) -> tuple[dict[str, Any], dict[str, Any], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticking = asyncio.create_task(ticker())
        asking = asyncio.create_task(commands.status(cast(Any, None), {"cmd": "status"}))
        while not pipe.reader_waiting():  # the status's read of the knob now hangs
            await asyncio.sleep(0.01)
        seen = ticks
        while ticks < seen + 3:  # the loop is not held
            await asyncio.sleep(0.01)
        on_loop = pc.status()  # no read, no wait: a status() the loop calls by itself
        assert not asking.done()
        pipe.release()
        reply = await asking
        ticking.cancel()
        return reply, on_loop, ticks - seen

    with hung(root, BIG_MAX) as pipe:
        outcome: list[tuple[dict[str, Any], dict[str, Any], int]] = []
        runner = in_thread(lambda: outcome.append(asyncio.run(scenario(pipe))))
        assert not runner.is_alive(), "the loop was held"
    reply, on_loop, _ = outcome[0]
    # Neither read nor waited for on the loop: the knob still being read (within its time)
    # shows what the read before it gave.
    assert on_loop["knobs"][BIG_MAX]["value"] == value
    assert on_loop["knobs"][GOVERNOR]["value"] is not None
    assert reply["class"] == "status"
    assert reply["power"]["knobs"][BIG_MAX]["value"] == value
    pc.stop()


class HeldReads(OsIO):
    """The plain file I/O, but reads of ``path`` wait for ``go`` while ``hold`` is set."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.hold = False
        self.entered, self.go = threading.Event(), threading.Event()

    def read_text(self, path: Path) -> str:
        if self.hold and os.path.realpath(path) == self.path:
            self.entered.set()
            self.go.wait(HANG_S)
        return super().read_text(path)


@pytest.mark.timeout(300)
def test_a_status_shows_what_it_read_while_the_next_one_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clients' statuses interleave on the loop: the first has awaited its reads, the
    second has started its own (held) before the first is put together. The first shows
    the values it read, not "no value" for reads that are not its own."""
    monkeypatch.setattr("wattgate.daemon.knobs.READ_TIMEOUT_S", HANG_S * 10)
    root = materialize("rk3588", tmp_path / "sys")
    io = HeldReads(Path(os.path.realpath(root / BIG_MAX)))
    pc = started(tmp_path, root, io)
    value = pc.status()["knobs"][BIG_MAX]["value"]

    async def scenario() -> dict[str, Any]:
        await pc.read_knobs()  # the first status's reads, returned
        io.hold = True
        second = asyncio.create_task(pc.read_knobs())  # the next status's, held
        await asyncio.to_thread(io.entered.wait, HANG_S)
        first = pc.status()  # the first status, put together on the loop
        io.go.set()
        await second
        return first

    outcome: list[dict[str, Any]] = []
    assert not in_thread(lambda: outcome.append(asyncio.run(scenario()))).is_alive()
    assert outcome[0]["knobs"][BIG_MAX]["value"] == value
    pc.stop()


@pytest.mark.timeout(300)
def test_a_knob_with_a_stuck_write_is_not_read(tmp_path: Path) -> None:
    """A knob whose store hangs (Hanging) is not read while the write is pending: the status
    neither waits for it nor calls it timed out; its read comes after the write."""
    root = materialize("rk3588", tmp_path / "sys")
    io = Hanging(Path(os.path.realpath(root / GOVERNOR)), "performance")
    pc = started(tmp_path, root, io)
    pc.pin("loud", "uid 0")
    assert io.entered.wait(HANG_S)
    statuses: list[dict[str, Any]] = []
    assert not in_thread(lambda: statuses.append(pc.status())).is_alive()
    assert "value" not in statuses[0]["knobs"][GOVERNOR]
    assert "error" not in statuses[0]["knobs"][GOVERNOR]
    io.go.set()
    assert pc.settle(HANG_S)
    assert pc.status()["knobs"][GOVERNOR]["value"] == "performance"
    pc.stop()


def others_while_reloading(pc: PowerController, cfg: Any, pipe: Hung) -> list[dict[str, Any]]:
    """Reload pc to cfg on a thread while pipe's attribute does not answer the reload's
    read; a tick, a pin and a status meanwhile must not wait for it. Then the read is
    answered and the reload must end. The status taken meanwhile."""
    reloading = threading.Thread(target=pc.reload, args=(cfg, 1.0), daemon=True)
    reloading.start()
    pipe.wait_for_reader()
    statuses: list[dict[str, Any]] = []

    def others() -> None:
        pc.tick(2.0)
        pc.pin("loud", "uid 0")
        statuses.append(pc.status())
    assert not in_thread(others).is_alive(), "held up by the reload's read"
    assert reloading.is_alive()
    pipe.release()
    reloading.join(HANG_S)
    assert not reloading.is_alive()
    return statuses


@pytest.mark.timeout(300)
def test_a_reload_whose_new_knob_does_not_read_holds_up_no_tick(tmp_path: Path) -> None:
    """A reload reads the originals of the knobs its profiles come to drive. One of them
    hangs: the tick and the status (the event loop's) and a pin go on meanwhile, with the
    old profiles; once the read returns, the reload takes its original.

    Before, the reload read them holding the controller's lock, which the tick, the status
    and the capture thread all take: the daemon froze with the read."""
    root = materialize("rk3588", tmp_path / "sys")
    pc = started(tmp_path, root)
    new_knob = "class/devfreq/fb000000.gpu/governor"  # no profile drives the GPU yet
    assert new_knob not in pc.driven
    governed = controller(tmp_path, root, OsIO(), {  # the same board and journal
        **PROFILES, "steady": {"gpu_governor": ["powersave"]}}).cfg
    with hung(root, new_knob) as pipe:
        statuses = others_while_reloading(pc, governed, pipe)
    assert "steady" not in statuses[0]["profile"]["available"]
    assert new_knob in pc.driven
    assert pc.baseline[new_knob] == pipe.held.strip()
    assert pc.settle(HANG_S)
    assert pc.status()["profile"]["name"] == "loud"  # the pin outlived the reload
    pc.stop()


@pytest.mark.timeout(300)
def test_a_reload_that_starts_afresh_holds_up_no_tick_while_discovering(
    tmp_path: Path,
) -> None:
    """A reload to another journal directory restores and starts afresh: it discovers the
    board again, and a read of that hangs. The tick, the status and a pin go on meanwhile;
    once the read returns, the new start applies the pin, and the exit gives every
    original back."""
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    pc = started(tmp_path, root)
    afresh = controller(tmp_path / "other", root, OsIO()).cfg  # another journal_dir
    with hung(root, "class/devfreq/fb000000.gpu/governor") as pipe:  # read by discovery only
        others_while_reloading(pc, afresh, pipe)
    assert pc.settle(HANG_S)
    status = pc.status()
    assert status["profile"]["name"] == "loud"
    assert status["knobs"][GOVERNOR]["value"] == "performance"
    pc.stop()
    assert tree_snapshot(root) == before


# -- the daemon ---------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_knob_whose_read_hangs_stalls_no_client(
    start_daemon: Any, face_video: FaceVideo, tmp_path: Path
) -> None:
    """One client's status meets the hung read: another client is answered meanwhile, its
    subscription goes on, and both statuses come back with the knob shown as timed out;
    more statuses do not read it again (no thread piles up on it). Once the read returns,
    the knob shows its value again, and the exit gives every original back.

    Before, the status read the knob on the event loop: nothing was answered any more."""
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    daemon: DaemonProcess = start_daemon(
        camera={"source": str(face_video.path), "loop": True},
        power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal"),
               "profile": "calm"},
        profiles=PROFILES,
    )
    with daemon.connect() as first, daemon.connect() as second:
        first.settimeout(HANG_S)
        second.settimeout(HANG_S)
        settled = first.request("status")["power"]["knobs"][BIG_MAX]
        assert "error" not in settled and settled["value"] == settled["target"]
        with hung(root, BIG_MAX) as pipe:
            answers: list[dict[str, Any]] = []
            asking = threading.Thread(
                target=lambda: answers.append(first.request("status")), daemon=True)
            asking.start()
            pipe.wait_for_reader()  # the first status's read of the knob now hangs
            second.request("subscribe", topics=["power"])
            ticks = [m for _, m in zip(range(2), second.messages())]
            assert all(m["class"] == "power" for m in ticks)  # the loop ticks on
            knob = second.request("status")["power"]["knobs"][BIG_MAX]
            assert knob["value"] is None and knob["error"].startswith("read timed out after")
            assert knob["target"] == settled["target"]
            assert knob["original"] == settled["original"]
            asking.join(HANG_S)
            assert not asking.is_alive(), "the first client's status never came back"
            assert answers[0]["power"]["knobs"][BIG_MAX]["value"] is None
            threads = threads_of(daemon.proc.pid)
            for _ in range(20):  # the read in flight is neither waited for nor started again
                assert second.request("status")["power"]["knobs"][BIG_MAX]["value"] is None
            assert threads_of(daemon.proc.pid) <= threads, "a thread more for each status"
            pipe.release()
            wait_until(lambda: second.request("status")["power"]["knobs"][BIG_MAX].get(
                "value") == settled["value"], "the knob read again")
        assert "error" not in second.request("status")["power"]["knobs"][BIG_MAX]
    assert daemon.stop() == 0, daemon.log()
    assert "has not returned" in daemon.log()  # logged once it hung, and when it came back
    assert "still in a call" not in daemon.log()  # the idle readers ended at the stop
    assert tree_snapshot(root) == before


def test_wattgate_status_shows_a_knob_whose_read_hangs_as_unknown() -> None:
    """The CLI's status line for a knob reported with `"value": null` says "?" and why,
    not "None"."""
    from wattgate.cli_power import format_power

    lines = format_power({"knobs": {BIG_MAX: {
        "value": None, "original": "2400000", "error": "read timed out after 1 s"}}})
    assert lines[-1] == (f"  {BIG_MAX} = ? (was 2400000)  FAILED: read timed out after 1 s")


def test_a_read_whose_thread_cannot_start_is_tried_again_not_kept_in_flight() -> None:
    """At a task limit (systemd's TasksMax; here RLIMIT_NPROC, as another user: root is
    exempt) no reader thread can start. The status goes on without the knob's value (it
    raised before), and once threads can start again the knob is read: its read was not
    left recorded as in flight for good, and close() does not trip on a thread never
    started."""
    from wattgate.daemon.knobs import KnobReader

    def task() -> str:
        reader = KnobReader(lambda key: "performance", timeout_s=HANG_S)
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        resource.setrlimit(resource.RLIMIT_NPROC, (1, hard))  # this process is one already
        limited = reader.start({GOVERNOR: 0})
        resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
        reads = reader.start({GOVERNOR: 0})
        reader.wait(reads)
        outcome = reader.outcome(reads[GOVERNOR], 0)
        reader.close(HANG_S)
        return f"{sorted(limited)} {outcome}"

    user = pwd.getpwnam("nobody")
    assert run_as(user.pw_uid, user.pw_gid, task) == "[] ('performance', None)"
