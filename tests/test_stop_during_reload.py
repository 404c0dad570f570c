"""A stop while a reload waits for a sysfs read that hangs: the stop does not wait for it,
and the reload, when its read comes back after the originals were restored, writes nothing.

A reload reads the originals of the knobs its new profiles come to drive, and one that
starts afresh (another journal_dir) discovers the board again; a read can block for good
in a driver. The daemon's stop used to wait for the reload to finish: SIGTERM did nothing
until systemd's SIGKILL, and the board's settings were given back only at the next start.
The hung read is a named pipe in a fake RK3588 tree (test_power_status_stall.Hung).
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess, FaceVideo, tree_snapshot, write_config
from tests.fixtures.boards import materialize
from tests.test_power_status_stall import hung, started
from tests.test_power_writer import HANG_S, PROFILES, controller, wait_until
from wattgate.client import Client, ClientError
from wattgate.daemon.power import PowerController
from wattgate.daemon.rollback import JOURNAL_NAME
from wattgate.drivers.sysfs import OsIO

GPU_GOVERNOR = "class/devfreq/fb000000.gpu/governor"  # no profile of PROFILES drives it
# "steady" sets the GPU's governor: a reload to these reads its original first.
GOVERNED = {**PROFILES, "steady": {"gpu_governor": ["powersave"]}}


def stop_during_reload(pc: PowerController, cfg: Any, root: Path) -> list[Any]:
    """Reload pc to cfg on a thread; once it waits for a read of the GPU governor (made to
    hang), stop pc, then let the read return. The reload must end: what it returned."""
    events: list[Any] = []
    reloading = threading.Thread(target=lambda: events.extend(pc.reload(cfg, 1.0)),
                                 daemon=True)
    with hung(root, GPU_GOVERNOR) as pipe:
        reloading.start()
        pipe.wait_for_reader()
        pc.stop()
    reloading.join(HANG_S)
    assert not reloading.is_alive()
    return events


@pytest.mark.timeout(300)
def test_a_reload_whose_read_returns_after_the_stop_changes_nothing(tmp_path: Path) -> None:
    """The stop restores while the reload waits for the GPU governor's original; when the
    read returns, the reload takes neither the new profiles nor the knob, and the tree
    holds the originals."""
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    pc = started(tmp_path, root)
    governed = controller(tmp_path, root, OsIO(), GOVERNED).cfg
    assert stop_during_reload(pc, governed, root) == []
    assert GPU_GOVERNOR not in pc.driven
    assert "steady" not in pc.profiles
    assert tree_snapshot(root) == before


@pytest.mark.timeout(300)
def test_a_reload_whose_crash_restore_returns_after_the_stop_writes_nothing(
    tmp_path: Path,
) -> None:
    """A reload to another journal_dir that holds a crashed run's journal: the new start
    gives those originals back first, and the read of one hangs. The stop comes meanwhile
    (before the new journal is the controller's, so it has nothing of its own to restore);
    once the read returns, the new start must not write the idle settings, which nothing
    would give back before the next start."""
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    pc = started(tmp_path, root)
    afresh = controller(tmp_path / "other", root, OsIO()).cfg
    crashed = Path(afresh.power.journal_dir)
    crashed.mkdir(parents=True)
    original = (root / GPU_GOVERNOR).read_text()
    (crashed / JOURNAL_NAME).write_text(json.dumps({
        "version": 1, "root": str(root),
        "entries": [{"attribute": GPU_GOVERNOR, "original": original}]}))
    events = stop_during_reload(pc, afresh, root)  # the governor: read by the crash restore
    assert pc.settle(HANG_S)
    assert tree_snapshot(root) == before
    assert events == []


@pytest.mark.timeout(300)
def test_a_reload_that_starts_afresh_and_returns_after_the_stop_writes_nothing(
    tmp_path: Path,
) -> None:
    """A reload to another journal_dir restores, then discovers the board again, and a read
    of that hangs. The stop comes meanwhile; once the read returns, the new start neither
    starts the writer nor writes the idle settings: the tree holds the originals, and the
    board is free for another controller."""
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    pc = started(tmp_path, root)
    afresh = controller(tmp_path / "other", root, OsIO()).cfg  # another journal_dir
    assert stop_during_reload(pc, afresh, root) == []  # the governor: read by discovery
    assert pc.settle(HANG_S)
    assert tree_snapshot(root) == before
    assert not pc.writes
    other = controller(tmp_path / "third", root, OsIO())  # the board lock was let go
    other.start(0.0)
    assert other.writes
    other.stop()
    assert tree_snapshot(root) == before


def ask_reload(client: Client, answers: list[Any]) -> None:
    """The `reload` request; its answer's error code (or "reloaded") into answers."""
    try:
        client.request("reload")
        answers.append("reloaded")
    except ClientError as exc:
        answers.append(exc.code)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["sighup", "request"])
def test_sigterm_during_a_reload_stuck_in_a_read_exits_and_restores(
    start_daemon: Any, face_video: FaceVideo, tmp_path: Path, how: str
) -> None:
    """SIGTERM while a reload waits for a read that hangs: the daemon gives the reload up
    (it says so), restores the originals and exits 0; the read coming back meanwhile
    writes nothing. A client that asked for the reload is told the daemon is stopping."""
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    sections: dict[str, Any] = {
        "camera": {"source": str(face_video.path), "loop": True},
        "power": {"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal"),
                  "profile": "calm"},
    }
    daemon: DaemonProcess = start_daemon(profiles=PROFILES, **sections)
    with daemon.connect() as client:
        client.settimeout(HANG_S)
        assert client.request("status")["power"]["writes"]
        write_config(daemon.config, daemon.config.parent, profiles=GOVERNED, **sections)
        with hung(root, GPU_GOVERNOR) as pipe:
            answers: list[Any] = []
            if how == "sighup":
                daemon.proc.send_signal(signal.SIGHUP)
            else:
                asking = threading.Thread(target=ask_reload, args=(client, answers),
                                          daemon=True)
                asking.start()
            pipe.wait_for_reader()
            daemon.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: "reload given up" in daemon.log() or daemon.proc.poll()
                       is not None, "the reload given up")
            pipe.release()  # the read returns, during or after the shut-down
            assert daemon.proc.wait(HANG_S) == 0, daemon.log()
            if how == "request":
                asking.join(HANG_S)
                assert answers == ["unavailable"]
    log = daemon.log()
    assert "reload given up" in log, log
    assert tree_snapshot(root) == before


@pytest.mark.timeout(300)
def test_sigterm_during_a_reload_that_turns_power_on_and_hangs_writes_nothing(
    start_daemon: Any, face_video: FaceVideo, tmp_path: Path
) -> None:
    """Started on a tree with no knobs, the daemon is reloaded onto an RK3588 whose
    discovery hangs: the reload starts a power controller of its own. SIGTERM does not wait
    for it and stops that controller as well, so when the read returns its start writes
    nothing (before, it was stopped by no one: the exit waited for it, then it wrote the
    idle settings and nothing gave them back)."""
    empty = tmp_path / "empty-sys"
    empty.mkdir()
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    camera = {"source": str(face_video.path), "loop": True}
    power: dict[str, Any] = {"sysfs_root": str(empty), "journal_dir": str(tmp_path / "j")}
    daemon: DaemonProcess = start_daemon(profiles=PROFILES, camera=camera, power=power)
    with daemon.connect() as client:
        assert not client.request("status").get("power")
    write_config(daemon.config, daemon.config.parent, profiles=PROFILES, camera=camera,
                 power={**power, "sysfs_root": str(root), "profile": "calm"})
    with hung(root, GPU_GOVERNOR) as pipe:  # read by the discovery of the new start
        daemon.proc.send_signal(signal.SIGHUP)
        pipe.wait_for_reader()
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(HANG_S) == 0, daemon.log()  # the read still hangs
    assert "asked to stop while starting power control" in daemon.log(), daemon.log()
    assert tree_snapshot(root) == before


@pytest.mark.timeout(300)
def test_sigterm_while_power_control_starts_and_hangs_exits_at_once(
    start_daemon: Any, face_video: FaceVideo, tmp_path: Path
) -> None:
    """SIGTERM at start-up while the board's discovery waits for a read that hangs: the
    daemon exits 0 without waiting for the read (before, it stayed until the read came
    back, or until systemd's SIGKILL), and the start, left to its thread, wrote nothing."""
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    with hung(root, GPU_GOVERNOR) as pipe:  # read by discovery
        daemon: DaemonProcess = start_daemon(
            profiles=PROFILES, camera={"source": str(face_video.path), "loop": True},
            power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal"),
                   "profile": "calm"})
        pipe.wait_for_reader()
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(HANG_S) == 0, daemon.log()  # the read still hangs
    assert "asked to stop while starting power control" in daemon.log()
    assert tree_snapshot(root) == before
