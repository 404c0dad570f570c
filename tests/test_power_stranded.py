"""A knob whose store never returned keeps its original in the journal through every restore.

When the writer's store hangs in a driver (a device that does not resume), stop() goes on
without it (STOP_JOIN_S) and the store may still land afterwards: the journal must go on
naming that knob, so the next start gives it back. A structural reload restores and starts
afresh while the old store is still out, and the stop of a daemon whose reload is stuck in
its own restore must not wait for that restore (systemd would SIGKILL it). Stores that hang
are made with ``Hanging`` (tests/test_power_writer.py): no file on this machine blocks a
write the way a driver's store can.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import tree_snapshot
from tests.fixtures.boards import materialize
from tests.test_power_writer import (
    GOVERNOR,
    HANG_S,
    PROFILES,
    Hanging,
    background,
    controller,
    in_thread,
    read,
    stuck_in_a_store,
    wait_until,
)
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController
from wattgate.drivers.sysfs import OsIO

JOURNAL = "sysfs-journal.json"


def structural(tmp_path: Path, root: Path, **power: Any) -> Any:
    """The controller's config with ``board`` named (a structural change: the reload
    restores and starts afresh, same journal_dir) and only the calm profile (the pin of
    "loud" is released, so nothing writes the hanging value again)."""
    return parse_config({
        "power": {"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal"),
                  "profile": "calm", "board": "rk3588", **power},
        "profiles": {"calm": PROFILES["calm"]},
    })


@pytest.mark.timeout(300)
@pytest.mark.parametrize("journal_dir", ["same", "other"])
def test_a_structural_reload_keeps_a_stuck_stores_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal_dir: str
) -> None:
    """The governor's store of "performance" hangs; a structural reload restores and starts
    afresh (its start's crash restore ran over the stuck knob and dropped it from the
    journal), the daemon stops, and the store lands after that: the next start still
    gives the governor back."""
    root, before, io, pc = stuck_in_a_store(tmp_path, monkeypatch)
    extra = {} if journal_dir == "same" else {"journal_dir": str(tmp_path / "journal2")}
    new = structural(tmp_path, root, **extra)
    reloading = in_thread(lambda: pc.reload(new, 1.0))
    assert not reloading.is_alive(), "the reload waited for the stuck store"
    pc.stop()
    io.go.set()  # the store lands after the exit
    wait_until(lambda: read(root, GOVERNOR) == "performance", "the late store")
    again = PowerController(new, io=OsIO())
    again.start(10.0)  # the crash restore gives the governor back
    again.stop()
    assert tree_snapshot(root) == before


@pytest.mark.timeout(300)
def test_a_stop_does_not_wait_for_a_reloads_restore_stuck_in_a_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A structural reload's restore hangs giving the governor back; the daemon's stop
    (SIGTERM: it gives the reload up after a while) returns without it, saying which store
    holds it up, and the journal keeps every original for the next start."""
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    original = read(root, GOVERNOR)
    io = Hanging(Path(os.path.realpath(root / GOVERNOR)), original)
    pc = controller(tmp_path, root, io)
    pc.start(0.0)
    assert read(root, GOVERNOR) == "powersave"
    monkeypatch.setattr("wattgate.daemon.power.STOP_JOIN_S", 0.1)
    reloading = background(lambda: pc.reload(structural(tmp_path, root), 1.0))
    assert io.entered.wait(HANG_S)
    stopping = background(pc.stop)
    stopping.join(HANG_S / 2)  # a hang guard: Hanging lets the store through at HANG_S
    assert not stopping.is_alive(), "stop() waited for the reload's stuck restore"
    assert f"has not ended after 0 s (writing {GOVERNOR})" in caplog.text
    assert GOVERNOR in (tmp_path / "journal" / JOURNAL).read_text()
    io.go.set()
    reloading.join(HANG_S)
    assert not reloading.is_alive()
    again = controller(tmp_path, root, OsIO())
    again.start(10.0)
    again.stop()
    assert tree_snapshot(root) == before
