"""`wattgate restore` and the unit's ExecStopPost: a board a killed daemon left changed is
given back without starting the daemon again, and a live daemon's settings never are.

The "daemon" here is the real PowerController (what `wattgate run` uses for sysfs, journal
and lock) in a forked child, killed with SIGKILL mid-run; the command runs as a real
subprocess against a fake tree of a real board."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import tree_snapshot, write_config
from tests.fixtures.boards import materialize
from wattgate import cli
from wattgate.cli_power import EXIT_HELD
from wattgate.config import EXIT_CONFIG, PowerConfig, load_config
from wattgate.daemon.power import PowerController
from wattgate.daemon.rollback import JOURNAL_NAME, LOCK_NAME
from wattgate.policies.gating import GateVerdict

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "systemd" / "wattgate.service"
SOCKET = ROOT / "systemd" / "wattgate.socket"
MOTION = GateVerdict(True, "motion", 0.1, True, ((0, 0, 10, 10),))
NPU_GOVERNOR = "class/devfreq/fdab0000.npu/governor"

StartRun = Callable[[Path], int]


def board(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A fake RK3588 tree, its journal_dir, and a config that names both."""
    root = materialize("rk3588", tmp_path / "sys")
    journal = tmp_path / "journal"
    config = write_config(tmp_path / "config.toml", tmp_path,
                          power={"sysfs_root": str(root), "journal_dir": str(journal)})
    return root, journal, config


@pytest.fixture
def start_run() -> Iterator[StartRun]:
    """start_run(config) -> the pid of a child that runs the power controller of config
    (the daemon's start: lock, restore, idle settings) and then a motion trigger (the
    active settings), and waits to be killed. Killed at teardown if still there."""
    children: list[int] = []

    def start(config: Path) -> int:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # no pytest machinery here, and out with os._exit
            os.close(read_fd)
            try:
                controller = PowerController(load_config(config))
                controller.start(0.0)
                controller.on_gate(MOTION, 1.0)
                os.write(write_fd, b"running")
                while True:
                    signal.pause()
            except BaseException as exc:
                os.write(write_fd, f"raised {exc!r}".encode())
            os._exit(1)
        children.append(pid)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            assert pipe.read(7) == "running"
        return pid

    yield start
    for pid in children:
        kill(pid)


def kill(pid: int) -> None:
    """SIGKILL, as systemd sends past TimeoutStopSec=: no stop(), no restore."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def restore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattgate.cli", "restore", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def journaled(journal: Path) -> list[str]:
    data = json.loads((journal / JOURNAL_NAME).read_text())
    return [entry["attribute"] for entry in data["entries"]]


def test_a_run_killed_mid_run_is_put_back_byte_for_byte(
    start_run: StartRun, tmp_path: Path
) -> None:
    root, journal, config = board(tmp_path)
    before = tree_snapshot(root)
    kill(start_run(config))
    assert tree_snapshot(root) != before  # nobody restored anything
    changed = journaled(journal)
    assert NPU_GOVERNOR in changed

    done = restore("--config", str(config))
    assert done.returncode == 0, done.stderr
    assert tree_snapshot(root) == before
    assert not (journal / JOURNAL_NAME).exists()
    # each journaled attribute once: written back, or found back already; a frequency
    # limit is always written back (what it shows may be a cap, not the request)
    printed = [tuple(line.split()) for line in done.stdout.splitlines()]
    assert sorted(a for _, a in printed) == sorted(changed)
    assert {word for word, _ in printed} <= {"restored", "unchanged"}
    assert all(word == "restored" for word, a in printed if a.endswith("_freq"))
    assert ("restored", NPU_GOVERNOR) in printed

    again = restore("--config", str(config))  # what ExecStopPost does after a clean stop
    assert (again.returncode, again.stdout.strip(), again.stderr) == (
        0, "nothing to restore", "")
    assert tree_snapshot(root) == before


def test_a_live_daemon_is_left_alone(start_run: StartRun, tmp_path: Path) -> None:
    root, journal, config = board(tmp_path)
    before = tree_snapshot(root)
    pid = start_run(config)
    live, live_journal = tree_snapshot(root), (journal / JOURNAL_NAME).read_bytes()
    assert live != before

    refused = restore("--config", str(config))
    assert refused.returncode == EXIT_HELD == 75
    assert f"pid {pid}" in refused.stderr and refused.stdout == ""
    assert tree_snapshot(root) == live
    assert (journal / JOURNAL_NAME).read_bytes() == live_journal

    kill(pid)  # the lock goes with the process: now the originals can go back
    assert restore("--config", str(config)).returncode == 0
    assert tree_snapshot(root) == before


def test_an_attribute_that_refuses_stays_in_the_journal(
    start_run: StartRun, tmp_path: Path
) -> None:
    """/dev/full refuses every write (ENOSPC), as a driver refuses one it cannot take."""
    root, journal, config = board(tmp_path)
    before = tree_snapshot(root)
    kill(start_run(config))
    governor = root / NPU_GOVERNOR
    killed_value, mode = governor.read_bytes(), governor.stat().st_mode
    governor.unlink()
    governor.symlink_to("/dev/full")

    partly = restore("--config", str(config))
    assert partly.returncode == 1
    assert f"keeps {NPU_GOVERNOR} for the next try" in partly.stderr
    # why, once: the library's log lines are not printed beside the command's own
    assert partly.stderr.count("No space left on device") == 1, partly.stderr
    assert journaled(journal) == [NPU_GOVERNOR]
    assert NPU_GOVERNOR not in partly.stdout

    governor.unlink()  # the driver takes stores again
    governor.write_bytes(killed_value)
    governor.chmod(mode)
    assert restore("--config", str(config)).returncode == 0
    assert tree_snapshot(root) == before
    assert not (journal / JOURNAL_NAME).exists()


def test_a_journal_it_cannot_read_is_left_for_the_release_that_can(
    start_run: StartRun, tmp_path: Path
) -> None:
    """A journal of another format version (or one this user cannot read) still holds the
    only originals: nothing is written, the journal stays as it is, and the exit says so."""
    root, journal, config = board(tmp_path)
    kill(start_run(config))
    data = json.loads((journal / JOURNAL_NAME).read_text())
    (journal / JOURNAL_NAME).write_text(json.dumps({**data, "version": 2}))
    killed, text = tree_snapshot(root), (journal / JOURNAL_NAME).read_bytes()
    out = restore("--config", str(config))
    assert out.returncode == 1 and "format version 2" in out.stderr, out.stderr
    assert "nothing restored" in out.stderr and out.stdout == ""
    assert tree_snapshot(root) == killed
    assert (journal / JOURNAL_NAME).read_bytes() == text


def test_a_corrupt_journal_is_reported_and_not_called_nothing_to_restore(
    start_run: StartRun, tmp_path: Path
) -> None:
    """A torn journal is set aside as '.corrupt' and nothing in it restored: that used to
    print "nothing to restore" and exit 0, so ExecStopPost= and the admin took the board for
    given back while the originals sat in the set-aside file."""
    root, journal, config = board(tmp_path)
    kill(start_run(config))
    killed = tree_snapshot(root)
    torn = (journal / JOURNAL_NAME).read_text()[:40]
    (journal / JOURNAL_NAME).write_text(torn)

    out = restore("--config", str(config))
    aside = journal / f"{JOURNAL_NAME}.corrupt"
    assert out.returncode == 1, out
    assert "nothing to restore" not in out.stdout
    assert f"unusable sysfs journal {journal / JOURNAL_NAME}" in out.stderr, out.stderr
    assert f"kept as {aside}" in out.stderr and "none of its originals were restored" in out.stderr
    assert out.stderr.count("unusable sysfs journal") == 1, out.stderr
    assert aside.read_text() == torn
    assert tree_snapshot(root) == killed  # nothing in it could be trusted


def test_journals_set_aside_earlier_are_named_until_they_are_removed(
    start_run: StartRun, tmp_path: Path
) -> None:
    """A restore after the one that set a torn journal aside said "nothing to restore" and
    exited 0 while the board's originals were recorded only in the set-aside file. Every
    restore names what is left set aside, and exits 1 until the operator removes them."""
    _, journal, config = board(tmp_path)
    aside = [journal / f"{JOURNAL_NAME}.corrupt", journal / f"{JOURNAL_NAME}.corrupt.1"]
    kill(start_run(config))
    (journal / JOURNAL_NAME).write_text((journal / JOURNAL_NAME).read_text()[:40])
    assert restore("--config", str(config)).returncode == 1  # sets the torn journal aside

    out = restore("--config", str(config))
    assert out.returncode == 1, out
    assert "nothing to restore" not in out.stdout
    assert f"1 journal(s) set aside earlier as unusable: {aside[0]};" in out.stderr, out.stderr
    assert "none of their originals were restored" in out.stderr
    assert "cat PATH" in out.stderr and "then remove the file" in out.stderr

    # A second torn journal: reported as set aside now, the first as set aside earlier.
    kill(start_run(config))
    (journal / JOURNAL_NAME).write_text("{")
    out = restore("--config", str(config))
    assert out.returncode == 1, out
    assert f"kept as {aside[1]}" in out.stderr, out.stderr
    assert f"set aside earlier as unusable: {aside[0]};" in out.stderr
    assert out.stderr.count(str(aside[1])) == 1, out.stderr

    out = restore("--config", str(config))
    assert f"2 journal(s) set aside earlier as unusable: {aside[0]}, {aside[1]};" in out.stderr

    for path in aside:  # read, and whatever the board needed written back by hand
        path.unlink()
    out = restore("--config", str(config))
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, "nothing to restore", "")


def test_a_journal_set_aside_with_no_lock_left_is_not_nothing_to_restore(
    tmp_path: Path,
) -> None:
    """Without a journal or a lock the restore answered "nothing to restore" before looking
    further: a set-aside journal (the lock file removed by hand since) was passed over."""
    _, journal, config = board(tmp_path)
    journal.mkdir()
    (journal / f"{JOURNAL_NAME}.corrupt").write_text('{"version": 1, "entr')
    out = restore("--config", str(config))
    assert out.returncode == 1 and "nothing to restore" not in out.stdout, out
    assert f"set aside earlier as unusable: {journal / JOURNAL_NAME}.corrupt;" in out.stderr
    assert sorted(p.name for p in journal.iterdir()) == [f"{JOURNAL_NAME}.corrupt"]


def test_skipped_entries_are_reported_with_what_was_restored(
    start_run: StartRun, tmp_path: Path
) -> None:
    """Entries of a journal that cannot be used are skipped and the others restored; the
    skipped ones are originals not given back, so the exit says so and names them."""
    root, journal, config = board(tmp_path)
    before = tree_snapshot(root)
    kill(start_run(config))
    data = json.loads((journal / JOURNAL_NAME).read_text())
    data["entries"].append({"attribute": "/etc/passwd", "original": "x"})
    (journal / JOURNAL_NAME).write_text(json.dumps(data))

    out = restore("--config", str(config))
    assert out.returncode == 1, out
    assert f"restored {NPU_GOVERNOR}" in out.stdout
    assert tree_snapshot(root) == before  # every good entry went back
    assert "entries[" in out.stderr and "'/etc/passwd'" in out.stderr, out.stderr
    assert f"kept as {journal / JOURNAL_NAME}.corrupt" in out.stderr


def test_a_bad_config_is_exit_78_and_touches_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[power]\njournal_dir = ""\n')
    for args in (("--config", str(bad)), ("--config", ""),
                 ("--config", str(tmp_path / "missing.toml"))):
        out = restore(*args)
        assert out.returncode == EXIT_CONFIG == 78, (args, out.stderr)
        assert "bad config" in out.stderr and out.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_after_a_clean_stop_nothing_is_touched(start_run: StartRun, tmp_path: Path) -> None:
    """A clean stop leaves the lock file and no journal; a journal_dir never made (power
    writes never tried) is not made by the restore either."""
    root, journal, config = board(tmp_path)
    before = tree_snapshot(root)
    out = restore("--config", str(config))
    assert (out.returncode, out.stdout.strip()) == (0, "nothing to restore")
    assert not journal.exists()

    controller = PowerController(load_config(config))
    controller.start(0.0)
    controller.on_gate(MOTION, 1.0)
    controller.stop()
    assert sorted(p.name for p in journal.iterdir()) == [LOCK_NAME]
    lock = (journal / LOCK_NAME).read_bytes()
    out = restore("--config", str(config))
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, "nothing to restore", "")
    assert sorted(p.name for p in journal.iterdir()) == [LOCK_NAME]
    assert (journal / LOCK_NAME).read_bytes() == lock
    assert tree_snapshot(root) == before


def test_restore_loads_nothing_heavy(tmp_path: Path) -> None:
    """ExecStopPost runs between a crash and the restart: OpenCV, numpy and the
    interpreter are not loaded to read a journal."""
    _, _, config = board(tmp_path)
    probe = ("import sys; from wattgate import cli; code = cli.main(['restore', '--config', "
             f"{str(config)!r}]); print(code, sorted(m for m in ('cv2', 'numpy', "
             "'tflite_runtime', 'ai_edge_litert') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.stdout.splitlines()[-1] == "0 []", out.stderr


# -- the unit ---------------------------------------------------------------------------


def unit_lines(key: str) -> list[str]:
    prefix = f"{key}="
    return [line[len(prefix):] for line in SERVICE.read_text().splitlines()
            if line.startswith(prefix)]


def test_exec_stop_post_restores_with_the_config_of_exec_start() -> None:
    """After every stop: a SIGKILL past TimeoutStopSec=, a crash, a clean stop (an empty
    journal then). Prefixed "-" only: it runs as the unit's user in its sandbox ("+" or
    "!" would lift those), and its exit status does not make a stop a failure or start a
    restart (Restart= counts ExecStopPost= too); what it could not restore stays in the
    journal for the next start, and its output is in the unit's log."""
    (start,) = unit_lines("ExecStart")
    (post,) = unit_lines("ExecStopPost")
    assert post.startswith("-") and post[1] == "/"
    start_argv, post_argv = shlex.split(start), shlex.split(post[1:])
    assert post_argv[0] == start_argv[0]
    run_args = cli.build_parser().parse_args(start_argv[1:])
    restore_args = cli.build_parser().parse_args(post_argv[1:])
    assert (run_args.command, restore_args.command) == ("run", "restore")
    assert restore_args.config == run_args.config is not None
    power_md = (ROOT / "docs" / "power.md").read_text()
    assert f"    ExecStopPost={post}\n" in power_md  # the page shows the line as shipped


def test_the_journal_dir_is_in_the_units_runtime_directory() -> None:
    """What ExecStopPost writes (the journal, its lock) is writable in the sandbox: the
    default journal_dir is the unit's RuntimeDirectory, kept across restarts."""
    (runtime,) = unit_lines("RuntimeDirectory")
    assert Path(PowerConfig().journal_dir) == Path("/run") / runtime
    assert unit_lines("RuntimeDirectoryPreserve") == ["yes"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed")
def test_unit_with_exec_stop_post_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` does not check that a "-" command's binary exists, so the
    copy drops the prefix; /usr/bin/wattgate becomes this checkout's entry point."""
    script = Path(sys.executable).parent / "wattgate"
    if not script.exists():
        pytest.skip(f"no wattgate entry point beside {sys.executable}")
    text = SERVICE.read_text()
    assert text.count("ExecStopPost=-/usr/bin/wattgate ") == 1
    text = text.replace("ExecStopPost=-/usr/bin/wattgate ", f"ExecStopPost={script} ")
    (tmp_path / SERVICE.name).write_text(
        text.replace("ExecStart=/usr/bin/wattgate ", f"ExecStart={script} "))
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    out = subprocess.run(["systemd-analyze", "verify", SERVICE.name, SOCKET.name],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip(), out.stderr.strip()) == (0, "", "")


def test_a_journal_root_rewrites_stays_the_daemons(start_run: StartRun, tmp_path: Path) -> None:
    """`sudo wattgate restore` that could not put everything back saved the rest as a
    root-owned 0600 file: the daemon's user could not read it, and its next start wrote no
    power settings at all. The journal stays with the owner of its directory."""
    root, journal, config = board(tmp_path)
    kill(start_run(config))
    nobody = 65534
    os.chown(journal, nobody, nobody)
    os.chown(journal / JOURNAL_NAME, nobody, nobody)
    governor = root / NPU_GOVERNOR
    governor.unlink()
    governor.symlink_to("/dev/full")
    assert os.geteuid() == 0  # what the case is about: root rewriting the daemon's journal
    assert restore("--config", str(config)).returncode == 1
    saved = (journal / JOURNAL_NAME).stat()
    assert (saved.st_uid, saved.st_gid) == (nobody, nobody)
    assert journaled(journal) == [NPU_GOVERNOR]
