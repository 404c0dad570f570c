"""The sysfs journal: originals saved before the first write, restored in reverse order,
and a tree left by SIGKILL given back byte-identical by ``restore_pending``."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tree_snapshot
from tests.fixtures.boards import FaultyIO, materialize
from wattgate.daemon.rollback import (
    JOURNAL_NAME,
    JournaledWriter,
    JournalError,
    SysfsJournal,
    set_aside_journals,
    take_over,
)
from wattgate.drivers.sysfs import Sysfs
from wattgate.simkernel import WatchIO

CPUFREQ = "devices/system/cpu/cpufreq"
REPO = Path(__file__).resolve().parents[1]




def test_original_saved_before_first_write_only(tmp_path: Path) -> None:
    fs = Sysfs(materialize("rk3588", tmp_path / "sys"))
    journal = SysfsJournal(tmp_path / "state", fs)
    writer = JournaledWriter(journal)
    gov = f"{CPUFREQ}/policy0/scaling_governor"
    assert writer.write(gov, "schedutil") is False  # no change, nothing journaled
    assert not journal.path.exists()
    assert writer.write(gov, "performance") is True
    assert writer.write(gov, "powersave") is True
    data = json.loads(journal.path.read_text())
    assert data["entries"] == [{"attribute": gov, "original": "schedutil\n"}]
    assert data["root"] == str(tmp_path / "sys")


def test_restore_in_reverse_order_and_remove_journal(tmp_path: Path) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    order: list[str] = []

    class Recording(FaultyIO):
        def write_text(self, path: Path, data: str) -> None:
            order.append(str(path.relative_to(root)))
            super().write_text(path, data)

    fs = Sysfs(root, Recording(root, {}))
    journal = SysfsJournal(tmp_path / "state", fs)
    writer = JournaledWriter(journal)
    attrs = [
        f"{CPUFREQ}/policy4/scaling_max_freq",
        "class/devfreq/fdab0000.npu/governor",
        "devices/platform/fdab0000.npu/power/control",
    ]
    for attr, value in zip(attrs, ["1200000", "performance", "on"]):
        writer.write(attr, value)
    writer.write(attrs[0], "816000")
    order.clear()
    report = journal.restore()
    assert report.ok and report.restored == list(reversed(attrs))
    assert order == list(reversed(attrs))
    assert not journal.path.exists()
    assert tree_snapshot(root) == before


def test_failed_restore_is_logged_and_does_not_stop_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    fs = Sysfs(root)
    journal = SysfsJournal(tmp_path / "state", fs)
    writer = JournaledWriter(journal)
    busy = "class/devfreq/fdab0000.npu/governor"
    writer.write(f"{CPUFREQ}/policy0/scaling_governor", "performance")
    writer.write(busy, "performance")
    writer.write(f"{CPUFREQ}/policy6/scaling_governor", "powersave")
    import errno

    fs.io = FaultyIO(root, {busy: errno.EBUSY})
    report = journal.restore()
    assert set(report.restored) == {
        f"{CPUFREQ}/policy0/scaling_governor",
        f"{CPUFREQ}/policy6/scaling_governor",
    }
    assert list(report.failed) == [busy]
    assert "cannot restore" in caplog.text and busy in caplog.text
    # a transient failure stays journaled for the next start
    assert json.loads(journal.path.read_text())["entries"][0]["attribute"] == busy
    fs.io = FaultyIO(root, {})
    later = SysfsJournal(tmp_path / "state", fs)
    assert later.restore_pending().restored == [busy]
    assert not later.path.exists()
    assert fs.read(busy) == "rknpu_ondemand"


def test_an_original_the_kernel_takes_only_after_another_is_restored_after_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The performance profile on intel_pstate sets the governor, then the EPP. Last first,
    the EPP came back while the governor was still performance, which intel_pstate refuses
    (EBUSY): every policy's EPP was left at performance with an error each. The simulated
    kernel answers as intel_pstate does."""
    root = materialize("intel-mtl", tmp_path / "sys")
    before = tree_snapshot(root)
    fs = Sysfs(root, WatchIO())
    writer = JournaledWriter(SysfsJournal(tmp_path / "state", fs))
    for policy in ("policy0", "policy1"):
        writer.write(f"{CPUFREQ}/{policy}/scaling_governor", "performance")
        writer.write(f"{CPUFREQ}/{policy}/energy_performance_preference", "performance")
    report = writer.journal.restore()
    assert report.ok, report.failed
    assert len(report.restored) == 4 and "cannot restore" not in caplog.text
    assert tree_snapshot(root) == before
    assert not writer.journal.path.exists()


def test_restore_pending_after_a_crash_in_process(tmp_path: Path) -> None:
    root = materialize("intel-mtl", tmp_path / "sys")
    before = tree_snapshot(root)
    fs = Sysfs(root)
    writer = JournaledWriter(SysfsJournal(tmp_path / "state", fs))
    for cpu in range(22):
        writer.write(f"{CPUFREQ}/policy{cpu}/energy_performance_preference", "power")
    writer.write("class/accel/accel0/device/power/control", "on")
    del writer  # no restore: as if the process died
    (tmp_path / "state" / f".{JOURNAL_NAME}.999.tmp").write_text("{half")  # torn temp file
    assert tree_snapshot(root) != before
    report = SysfsJournal(tmp_path / "state", Sysfs(root)).restore_pending()
    assert len(report.restored) == 23
    assert tree_snapshot(root) == before
    assert list((tmp_path / "state").iterdir()) == []


def test_nothing_pending_is_a_no_op(tmp_path: Path) -> None:
    fs = Sysfs(materialize("rpi5", tmp_path / "sys"))
    report = SysfsJournal(tmp_path / "state", fs).restore_pending()
    assert report.ok and report.restored == []


CHILD = """
import random, sys
from wattgate.daemon.rollback import JournaledWriter, SysfsJournal
from wattgate.drivers import cpufreq, devfreq, runtime_pm
from wattgate.drivers.sysfs import Sysfs

root, state, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
fs = Sysfs(root)
journal = SysfsJournal(state, fs)
journal.restore_pending()          # what the daemon does at start
w = JournaledWriter(journal)
rng = random.Random(seed)
print("ready", flush=True)
policies = cpufreq.discover_policies(fs)
npus = [d for d in devfreq.discover_devfreq(fs) if d.name.endswith(".npu")]
n = 0
while True:
    p = rng.choice(policies)
    cpufreq.set_governor(w, p, [rng.choice(p.governors)])
    table = p.frequencies_khz or (p.cpuinfo_min_khz, p.cpuinfo_max_khz)
    cpufreq.set_limits(w, cpufreq.read_policy(fs, p.name), max_khz=rng.choice(table))
    for npu in npus:
        devfreq.set_governor(w, npu, [rng.choice(npu.governors)])
        cap = rng.choice(npu.frequencies_hz)
        devfreq.set_limits(w, devfreq.read_devfreq(fs, npu.name), max_hz=cap)
        runtime_pm.set_control(w, npu.device, rng.choice(["auto", "on"]))
    n += 1
    print(n, flush=True)
"""


@pytest.mark.parametrize("board", ["rk3588", "jetson-orin-nano", "intel-mtl"])
def test_sigkill_at_random_points_then_restore_pending(board: str, tmp_path: Path) -> None:
    """Real processes write through the journal and are SIGKILLed mid-run, repeatedly;
    each new one restores first, as the daemon does; the tree comes back byte-identical."""
    root = materialize(board, tmp_path / "sys")
    state = tmp_path / "state"
    before = tree_snapshot(root)
    rng = random.Random(f"wattgate-{board}")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for round_no in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), str(state), str(rng.randrange(1 << 30))],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        # kill after a random number of completed rounds, and at a random point
        # inside the next one (the child keeps writing while we read)
        for _ in range(rng.randrange(0, 6)):
            if not child.stdout.readline():
                break
        for _ in range(rng.randrange(0, 200)):
            pass
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL, f"round {round_no} ended on its own"
    assert tree_snapshot(root) != before or not (state / JOURNAL_NAME).exists()
    report = SysfsJournal(state, Sysfs(root)).restore_pending()
    assert report.ok, report.failed
    assert tree_snapshot(root) == before
    assert not (state / JOURNAL_NAME).exists()


# -- a journal that is not what it should be ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "{half", "[]", "null", '{"entries": null}', '{"version": 1, "root": 7, "entries": []}'],
)
def test_journal_of_the_wrong_shape_is_set_aside(
    text: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Valid JSON of the wrong shape is as unusable as torn JSON: set aside with the reason,
    never an AttributeError/TypeError out of the constructor (the daemon's start)."""
    fs = Sysfs(materialize("rk3588", tmp_path / "sys"))
    state = tmp_path / "state"
    state.mkdir()
    (state / JOURNAL_NAME).write_text(text)
    journal = SysfsJournal(state, fs)
    assert journal.attributes == []
    assert (state / f"{JOURNAL_NAME}.corrupt").read_text() == text
    assert "unusable sysfs journal" in caplog.text and str(state / JOURNAL_NAME) in caplog.text
    # the daemon's start logs no more than this: it has to say that nothing was given back
    assert "none of its originals were restored" in caplog.text
    (unusable,) = journal.restore_pending().unusable
    assert f"kept as {state / JOURNAL_NAME}.corrupt" in unusable
    assert JournaledWriter(journal).write(f"{CPUFREQ}/policy0/scaling_governor", "powersave")
    assert journal.restore().restored == [f"{CPUFREQ}/policy0/scaling_governor"]


def test_bad_entries_are_skipped_and_the_good_ones_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    gov = f"{CPUFREQ}/policy0/scaling_governor"
    (root / gov).write_text("performance\n")  # what the crashed run left
    state = tmp_path / "state"
    state.mkdir()
    entries = [
        {"attribute": "../../etc/passwd", "original": "x"},
        {"attribute": f"{CPUFREQ}/policy4/scaling_governor", "original": None},
        ["not", "an", "object"],
        {"attribute": gov, "original": "schedutil\n"},
    ]
    text = json.dumps({"version": 1, "root": str(root), "entries": entries})
    (state / JOURNAL_NAME).write_text(text)
    report = SysfsJournal(state, Sysfs(root)).restore_pending()
    assert report.restored == [gov] and not report.ok  # three originals are not back
    (skipped,) = report.unusable
    assert "entries[0]" in skipped and "entries[2]" in skipped
    assert "not restored" in caplog.text
    assert (root / gov).read_text() == "schedutil\n"
    assert "entries[0].attribute '../../etc/passwd'" in caplog.text
    assert f"entries[1].original of {CPUFREQ}/policy4/scaling_governor is None" in caplog.text
    assert (state / f"{JOURNAL_NAME}.corrupt").read_text() == text
    assert not (state / JOURNAL_NAME).exists()


def test_journals_set_aside_are_listed_oldest_first(tmp_path: Path) -> None:
    """Each unusable journal is kept beside the ones before it, never over them; the list
    names them in the order they were kept (.corrupt.10 after .corrupt.9) and nothing
    else of the directory (a temp file, a lock, a backup of the operator's)."""
    fs = Sysfs(materialize("rk3588", tmp_path / "sys"))
    state = tmp_path / "state"
    state.mkdir()
    assert set_aside_journals(state) == [] and set_aside_journals(tmp_path / "none") == []
    kept = []
    for number in range(11):
        (state / JOURNAL_NAME).write_text(f"{{torn {number}")
        journal = SysfsJournal(state, fs)
        kept.extend(journal.set_aside)
    for other in ("sysfs-journal.lock", f"{JOURNAL_NAME}.corrupt.old", f"{JOURNAL_NAME}.bak",
                  f".{JOURNAL_NAME}.12.tmp"):
        (state / other).write_text("")
    assert set_aside_journals(state) == kept
    assert [p.name for p in kept[:2]] == [f"{JOURNAL_NAME}.corrupt", f"{JOURNAL_NAME}.corrupt.1"]
    assert kept[10].read_text() == "{torn 10"


def test_a_start_names_journals_set_aside_by_an_earlier_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal set aside by an earlier start may hold the only record of the board's own
    values: every later start says so until it is removed, and not twice for one set aside
    by this very start (whose own error says it)."""
    fs = Sysfs(materialize("rk3588", tmp_path / "sys"))
    state = tmp_path / "state"
    state.mkdir()
    (state / JOURNAL_NAME).write_text("{torn")
    lock, _, _ = take_over(state, fs, create=True)
    lock.release()
    assert "set aside earlier" not in caplog.text
    caplog.clear()
    (state / JOURNAL_NAME).write_text("{torn again")
    lock, _, _ = take_over(state, fs, create=True)
    lock.release()
    (earlier,) = [r.getMessage() for r in caplog.records if "set aside earlier" in r.message]
    assert f"{state / JOURNAL_NAME}.corrupt;" in earlier and ".corrupt.1" not in earlier
    caplog.clear()
    for path in set_aside_journals(state):
        path.unlink()
    lock, _, _ = take_over(state, fs, create=True)
    lock.release()
    assert "set aside earlier" not in caplog.text


def test_journal_of_another_format_version_is_kept_and_refused(tmp_path: Path) -> None:
    fs = Sysfs(materialize("rk3588", tmp_path / "sys"))
    state = tmp_path / "state"
    state.mkdir()
    text = json.dumps({"version": 2, "root": str(fs.root), "entries": []})
    (state / JOURNAL_NAME).write_text(text)
    with pytest.raises(JournalError, match="format version 2"):
        SysfsJournal(state, fs)
    assert (state / JOURNAL_NAME).read_text() == text


def test_an_original_that_could_not_be_saved_is_never_written_even_on_retry(
    tmp_path: Path,
) -> None:
    """The journal cannot be saved (its directory is a file here; a read-only remount in the
    field): the write is refused, and so is the second attempt, which used to find the
    attribute already 'recorded' in memory and write with no original on disk."""
    root = materialize("rk3588", tmp_path / "sys")
    writer = JournaledWriter(SysfsJournal(tmp_path / "state", Sysfs(root)))
    (tmp_path / "state").write_text("a file where the directory should be")
    gov = f"{CPUFREQ}/policy0/scaling_governor"
    for _ in range(2):
        with pytest.raises(OSError):
            writer.write(gov, "performance")
        assert (root / gov).read_text() == "schedutil\n"
    assert writer.journal.attributes == []


def test_journal_left_under_another_root_does_not_capture_this_roots_originals(
    tmp_path: Path,
) -> None:
    """A crashed run drove another root (power.sysfs_root changed since): restore_pending
    puts that root back, and what this run changes afterwards is restored here, not
    compared with and written to the old root."""
    old = materialize("rk3588", tmp_path / "old")
    new = materialize("rk3588", tmp_path / "new")
    old_before, new_before = tree_snapshot(old), tree_snapshot(new)
    state = tmp_path / "state"
    gov = f"{CPUFREQ}/policy0/scaling_governor"
    JournaledWriter(SysfsJournal(state, Sysfs(old))).write(gov, "performance")
    journal = SysfsJournal(state, Sysfs(new))
    assert journal.restore_pending().restored == [gov]
    assert tree_snapshot(old) == old_before
    JournaledWriter(journal).write(gov, "powersave")
    assert json.loads(journal.path.read_text())["root"] == str(new)
    del journal  # SIGKILL
    report = SysfsJournal(state, Sysfs(new)).restore_pending()
    assert report.restored == [gov]
    assert tree_snapshot(new) == new_before and tree_snapshot(old) == old_before


def test_attributes_left_under_another_root_block_writes_under_this_one(tmp_path: Path) -> None:
    old = materialize("rk3588", tmp_path / "old")
    new = materialize("rk3588", tmp_path / "new")
    state = tmp_path / "state"
    busy = "class/devfreq/fdab0000.npu/governor"
    JournaledWriter(SysfsJournal(state, Sysfs(old))).write(busy, "performance")
    import errno

    journal = SysfsJournal(state, Sysfs(new, FaultyIO(old, {busy: errno.EBUSY})))
    assert list(journal.restore_pending().failed) == [busy]  # kept for the next start
    with pytest.raises(JournalError, match=f"under {old}"):
        JournaledWriter(journal).write(f"{CPUFREQ}/policy0/scaling_governor", "powersave")
    assert (new / CPUFREQ / "policy0/scaling_governor").read_text() == "schedutil\n"
    assert journal.original(busy) == "rknpu_ondemand\n"


def test_a_journal_set_aside_never_writes_over_one_set_aside_before(tmp_path: Path) -> None:
    """The file an unusable journal is kept in may be the only record of the board's own
    values; a second torn journal (the next power cut) replaced it, and those were gone."""
    fs = Sysfs(materialize("rk3588", tmp_path / "sys"))
    state = tmp_path / "state"
    state.mkdir()
    texts = ['{"entries": [{"attribute": "a", "orig', "{torn", '{"entries": [7]}']
    kept: list[str] = []
    for text in texts:
        (state / JOURNAL_NAME).write_text(text)
        (problem,) = SysfsJournal(state, fs).restore_pending().unusable
        kept.append(problem.rsplit(" ", 1)[1])
    assert len(set(kept)) == 3, kept
    assert [Path(path).read_text() for path in kept] == texts
