"""`wattgate check-config` gives the verdict `run` gives: exit 69 for a config `run`
refuses at start on this machine, naming the key as `run` does, and "ok" (exit 0) for one
`run` starts with, whatever it warns about.

It said "ok" for a model.kind that does not fit the model, a daemon.state_dir that is a
regular file, a daemon.socket under one and one that is a regular file, each of which
`run` refuses with 69; and it refused with 69 a config whose unused variant's file is
missing, which `run` starts with (a variant is loaded only when a profile or rule picks
it). Each case here is checked against a real `wattgate run`.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import DaemonProcess, run_as, write_config
from wattgate.cli import EXIT_UNAVAILABLE

StartDaemon = Callable[..., DaemonProcess]
NOBODY = 65534


def quiet(sections: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """sections with daemon.admin_group root: the default, wattgate-admin, is made by the
    package, and a machine without it gets a warning line about it."""
    return {**sections, "daemon": {"admin_group": "root", **sections.get("daemon", {})}}


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`wattgate check-config path`, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "wattgate.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=120)


def run_verdict(start_daemon: StartDaemon, config: Path) -> tuple[int, str]:
    """(0, "") if `run` starts on config (it answers a client, then stops cleanly), or its
    exit code and its one error line."""
    daemon = start_daemon(config=config)
    try:
        daemon.connect().close()
    except Exception:
        code = daemon.wait()
        errors = [line for line in daemon.log().splitlines() if line.startswith("wattgate:")]
        assert len(errors) == 1, daemon.log()
        return code, errors[0]
    assert daemon.stop() == 0, daemon.log()
    return 0, ""


def refused_config(tmp_path: Path, case: str) -> tuple[Path, str, str]:
    """A config `run` refuses: (its path, what check-config's line starts with, a piece of
    the reason both give)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    sections: dict[str, dict[str, Any]] = {
        "model-kind": {"model": {"kind": "ssd"}},
        "state-dir-is-a-file": {"daemon": {"state_dir": str(afile)}},
        "socket-under-a-file": {"daemon": {"socket": str(afile / "s.sock")}},
        "socket-is-a-file": {"daemon": {"socket": str(afile)}},
    }[case]
    config = write_config(tmp_path / "config.toml", tmp_path, **quiet(sections))
    key, reason = {
        "model-kind": ("model.kind: ", "decoder 'ssd' does not fit the model outputs"),
        "state-dir-is-a-file": (f"daemon.state_dir {afile}: ",
                                f"{afile}: is a regular file, not a directory"),
        "socket-under-a-file": (f"daemon.socket {afile / 's.sock'}: ",
                                f"{afile}: is a regular file, not a directory"),
        "socket-is-a-file": (f"daemon.socket {afile}: ",
                             "there is a regular file there, not a socket; not replacing it"),
    }[case]
    return config, key, reason


@pytest.mark.parametrize("case", ["model-kind", "state-dir-is-a-file", "socket-under-a-file",
                                  "socket-is-a-file"])
def test_what_run_refuses_check_config_refuses_with_69(
    start_daemon: StartDaemon, tmp_path: Path, case: str
) -> None:
    config, key, reason = refused_config(tmp_path, case)
    checked = check_config(config)
    assert checked.returncode == EXIT_UNAVAILABLE and checked.stdout == "", checked.stderr
    lines = checked.stderr.splitlines()
    assert lines[0] == f"wattgate: {config}: `run` would not start on this machine:", lines
    assert len(lines) == 2 and lines[1].startswith(f"  {key}") and reason in lines[1], lines
    code, line = run_verdict(start_daemon, config)
    assert code == EXIT_UNAVAILABLE and reason in line, line


def test_an_unused_variant_whose_file_is_missing_is_a_warning_as_run_starts(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.tflite"
    config = write_config(tmp_path / "config.toml", tmp_path, **quiet(
        {"model": {"variants": {"lite": {"path": str(missing)}}}}))
    checked = check_config(config)
    assert (checked.returncode, checked.stdout) == (0, f"{config}: ok\n"), checked.stderr
    assert checked.stderr.splitlines()[0] == f"wattgate: {config}: warning:"
    assert f"  model.variants.lite.path: model file {missing}: not found" in checked.stderr
    assert run_verdict(start_daemon, config) == (0, "")


def test_a_socket_directory_this_user_may_not_write_is_refused(reachable_tmp: Path) -> None:
    """As nobody, in-process (the venv's python is not nobody's to run): run refuses the
    same directory with the same words (tests/test_socket_path_refusals.py)."""
    from wattgate import cli

    # what check-config imports, imported as root: nobody may not read this python's own
    # extension modules (sqlite3) nor the venv
    from wattgate.daemon import eventlog, server  # noqa: F401
    from wattgate.drivers import inference  # noqa: F401

    closed = reachable_tmp / "closed"
    closed.mkdir()
    os.chmod(closed, 0o755)
    config = write_config(reachable_tmp / "config.toml", reachable_tmp, **quiet({
        "daemon": {"socket": str(closed / "s.sock"),
                   "state_dir": str(reachable_tmp / "open" / "state")}}))
    (reachable_tmp / "open").mkdir(mode=0o777)
    os.chmod(reachable_tmp / "open", 0o777)
    os.chmod(config, 0o644)

    def check() -> str:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["check-config", str(config)])
        return f"{code}\n{err.getvalue()}"

    report = run_as(NOBODY, NOBODY, check)
    assert report.splitlines()[0] == str(EXIT_UNAVAILABLE), report
    assert (f"  daemon.socket {closed / 's.sock'}: {closed}: is not writable by uid {NOBODY} "
            "(owner uid 0, gid 0, mode 0755); the socket is made in it") in report, report
