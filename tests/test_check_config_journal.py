"""`wattgate check-config` warns about a power.journal_dir that cannot be used, as `run`
meets it: under a regular file, a regular file itself, or a directory this user may not
write. `run` starts with such a config but writes no power settings (the journal of the
originals cannot be kept), and a reload to one is refused; check-config said "ok".

It is a warning, not a refusal (69), because `run` starts: check-config gives run's
verdict (tests/test_check_config_agrees.py). The first case is checked against a real
`wattgate run` on a fake RK3588 board; the others run check-config in this process."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from tests.conftest import DaemonProcess, run_as, write_config
from tests.fixtures.boards import materialize
from wattgate import cli

StartDaemon = Callable[..., DaemonProcess]
NOBODY = 65534
NOT_WRITTEN = "power settings will not be written"


def board_config(run_dir: Path, **power: Any) -> Path:
    """A config on a fake RK3588 under run_dir (knobs: power control runs), with the given
    power keys; admin_group root, as a machine without the packaged group warns of it."""
    materialize("rk3588", run_dir / "sys")
    return write_config(run_dir / "config.toml", run_dir, daemon={"admin_group": "root"},
                        power=power)


def check_config(config: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `wattgate check-config config`, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["check-config", str(config)])
    return code, out.getvalue(), err.getvalue()


def test_a_journal_dir_under_a_file_is_a_warning_and_run_starts_without_writes(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    journal = afile / "journal"
    config = board_config(tmp_path, journal_dir=str(journal))
    checked = subprocess.run([sys.executable, "-m", "wattgate.cli", "check-config",
                              str(config)], capture_output=True, text=True, timeout=120)
    assert (checked.returncode, checked.stdout) == (0, f"{config}: ok\n"), checked.stderr
    assert checked.stderr.splitlines() == [
        f"wattgate: {config}: warning:",
        f"  power.journal_dir {journal}: {afile}: is a regular file, not a directory; "
        f"{NOT_WRITTEN}",
    ]
    daemon = start_daemon(config=config)  # run agrees: it starts, and writes nothing
    daemon.connect().close()
    assert f"power.journal_dir {journal} unusable" in daemon.log(), daemon.log()
    assert NOT_WRITTEN in daemon.log()
    assert daemon.stop() == 0, daemon.log()


def test_a_journal_dir_that_is_a_file_is_a_warning(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, out, err = check_config(board_config(tmp_path, journal_dir=str(afile)))
    assert code == 0 and out.endswith(": ok\n"), err
    assert (f"  power.journal_dir {afile}: {afile}: is a regular file, not a directory; "
            f"{NOT_WRITTEN}") in err.splitlines(), err


def test_no_warning_for_a_journal_dir_to_be_made_nor_with_power_off(tmp_path: Path) -> None:
    """A journal_dir not there yet is made by `run` in a directory it may write; with
    power.enabled = false `run` keeps no journal (unless one is left to restore)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases: list[dict[str, Any]] = [
        {"journal_dir": str(tmp_path / "new" / "journal")},
        {"journal_dir": str(afile / "journal"), "enabled": False},
    ]
    for number, power in enumerate(cases):
        run_dir = tmp_path / f"run{number}"
        run_dir.mkdir()
        code, out, err = check_config(board_config(run_dir, **power))
        assert (code, err) == (0, ""), err
        assert out.endswith(": ok\n")


def test_a_journal_dir_this_user_may_not_write_is_a_warning(reachable_tmp: Path) -> None:
    """As nobody, in-process (the venv's python is not nobody's to run)."""
    # what check-config imports, imported as root: nobody may not read this python's own
    # extension modules (sqlite3) nor the venv
    from wattgate.daemon import eventlog, server  # noqa: F401
    from wattgate.drivers import inference  # noqa: F401

    closed = reachable_tmp / "closed"
    closed.mkdir()
    os.chmod(closed, 0o755)
    opened = reachable_tmp / "open"
    opened.mkdir()
    os.chmod(opened, 0o777)
    config = write_config(reachable_tmp / "config.toml", reachable_tmp, daemon={
        "admin_group": "root", "socket": str(opened / "s.sock"),
        "state_dir": str(opened / "state")}, power={"journal_dir": str(closed / "journal")})
    os.chmod(config, 0o644)

    def check() -> str:
        code, _, err = check_config(config)
        return f"{code}\n{err}"

    report = run_as(NOBODY, NOBODY, check)
    assert report.splitlines()[0] == "0", report
    assert (f"  power.journal_dir {closed / 'journal'}: {closed}: is not writable by uid "
            f"{NOBODY} (owner uid 0, gid 0, mode 0755); {closed / 'journal'} is made in it; "
            f"{NOT_WRITTEN}") in report.splitlines(), report
