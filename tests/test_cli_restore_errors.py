"""`wattgate restore` run by a user who may not use the journal: the unit runs it as the
daemon's user, an admin may run it by hand as anyone. A journal_dir it could not search
ended in a traceback (Path.exists raises PermissionError on Python 3.11); each refusal is
one line naming the path, with what to do, and exit 77 (EX_NOPERM), nothing touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wattgate.cli_power import EXIT_NO_PERMISSION
from wattgate.daemon.rollback import JOURNAL_NAME, LOCK_NAME

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as nobody")


# The real command as nobody, without supplementary groups. What restore imports (and the
# ascii codec /proc/locks is read with) is imported first: Python's own files here may be
# under /root, which nobody cannot read.
RESTORE_AS_NOBODY = f"""\
import os, sys
from wattgate.cli import main
import encodings.ascii, wattgate.daemon.rollback, wattgate.drivers.sysfs
os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
sys.exit(main(["restore", "--config", sys.argv[1]]))
"""


def restore_as_nobody(config: Path) -> tuple[int, str, str]:
    """The exit, stdout and stderr of `wattgate restore --config config` run as nobody."""
    done = subprocess.run([sys.executable, "-c", RESTORE_AS_NOBODY, str(config)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    return done.returncode, done.stdout, done.stderr


def journal_of_root(base: Path, mode: int) -> tuple[Path, Path]:
    """A journal_dir of root's, of this mode, with a journal and its lock in it, and a
    config that names it; the journal holds a setting nobody must not have restored."""
    directory = base / "journal"
    directory.mkdir()
    (directory / JOURNAL_NAME).write_text(json.dumps(
        {"version": 1, "root": str(base), "entries": []}))
    (directory / LOCK_NAME).touch()
    directory.chmod(mode)
    config = base / "config.toml"
    config.write_text(f'[power]\nsysfs_root = "{base}"\njournal_dir = "{directory}"\n')
    return directory, config


def one_line(text: str) -> str:
    assert "Traceback" not in text and text.count("\n") == 1, text
    return text


def test_a_journal_dir_it_may_not_search_is_one_line_and_77(reachable_tmp: Path) -> None:
    directory, config = journal_of_root(reachable_tmp, 0o700)
    before = (directory / JOURNAL_NAME).read_bytes()
    code, out, err = restore_as_nobody(config)
    assert code == EXIT_NO_PERMISSION and out == "", err
    assert one_line(err) == (
        f"wattgate restore: cannot look in power.journal_dir {directory}: Permission "
        "denied; nothing restored: run it as the daemon's user (who owns "
        "power.journal_dir) or as root\n")
    assert (directory / JOURNAL_NAME).read_bytes() == before


def test_a_lock_it_may_not_open_is_named_and_77(reachable_tmp: Path) -> None:
    directory, config = journal_of_root(reachable_tmp, 0o755)
    (directory / LOCK_NAME).chmod(0o600)
    code, out, err = restore_as_nobody(config)
    assert code == EXIT_NO_PERMISSION and out == "", err
    assert one_line(err) == (
        f"wattgate restore: {directory / LOCK_NAME}: Permission denied; nothing restored: "
        "run it as the daemon's user (who owns power.journal_dir) or as root\n")


def test_a_journal_it_may_not_read_is_77_too(reachable_tmp: Path) -> None:
    """The journal's own message says whose it is and what to do."""
    directory, config = journal_of_root(reachable_tmp, 0o755)
    (directory / JOURNAL_NAME).chmod(0o600)
    code, out, err = restore_as_nobody(config)
    assert code == EXIT_NO_PERMISSION and out == "", err
    assert str(directory / JOURNAL_NAME) in one_line(err)
    assert "not readable by this user (owner uid 0)" in err and "nothing restored" in err
