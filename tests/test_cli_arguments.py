"""The `wattgate` command's arguments: an empty --config is a config error, never the
built-in defaults; empty socket paths and counts or durations that cannot end a watch are
usage errors, before anything connects; and the line `watch` shows for each message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wattgate.cli import format_message


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattgate.cli", *args], capture_output=True, text=True,
        timeout=60, cwd=cwd, env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


@pytest.mark.parametrize("value", ["", " "])
def test_run_with_an_empty_config_path_is_a_config_error(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --config "$CONFIG"` with CONFIG unset started a daemon on the built-in defaults:
    the real /sys, /run/wattgate and /var/lib/wattgate. Run in this process with the
    daemon replaced by a guard, so that a regression cannot start one on this machine."""
    from wattgate import cli
    from wattgate.daemon import app

    def guard(*args: object) -> None:
        raise AssertionError("a daemon was started on the built-in defaults")

    monkeypatch.setattr(app, "Daemon", guard)
    assert cli.main(["run", "--config", value]) == 78
    err = capsys.readouterr().err
    assert f"bad config {value!r}:\n  an empty path names no config file" in err


@pytest.mark.parametrize(
    "args",
    [("check-config", ""), ("status", "--config", ""), ("events", "--config", ""),
     ("probe", "--config", ""),
     ("simulate", "--board", "rk3588", "--scene", "office", "--config", "")],
)
def test_an_empty_config_path_is_a_config_error(tmp_path: Path, args: tuple[str, ...]) -> None:
    """check-config '' read the current directory; status --config '' went to the
    default socket; probe and simulate took the built-in defaults."""
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 78, res.stderr
    assert "bad config" in res.stderr and "an empty path names no config file" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("status", "--socket", ""), "argument --socket: an empty path"),
        (("watch", "--count", "0"), "argument --count: must be 1 or more, got 0"),
        (("watch", "--count", "-1"), "argument --count: must be 1 or more, got -1"),
        (("watch", "--count", "x"), "argument --count: not a whole number: 'x'"),
        (("watch", "--duration", "nan"), "argument --duration: must be a finite number"),
        (("watch", "--duration", "inf"), "argument --duration: must be a finite number"),
        (("watch", "--duration", "0"), "argument --duration: must be a finite number above 0"),
    ],
)
def test_arguments_that_cannot_work_are_usage_errors(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    """--socket '' went to the default socket; --duration nan watched forever; --count 0
    or -1 and --duration -1 returned at once having shown nothing."""
    res = run_cli(*args, "--socket", str(tmp_path / "none.sock"), cwd=tmp_path) if (
        "--socket" not in args) else run_cli(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "cannot connect" not in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("profile", "--release", "powersave"),
         "argument name: not allowed with argument --release"),
        (("profile", "powersave", "--release"),
         "argument --release: not allowed with argument name"),
        (("profile", ""), "argument name: an empty profile name"),
        (("profile", " "), "argument name: an empty profile name"),
    ],
)
def test_profile_arguments_that_say_two_things_are_usage_errors(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    """`profile --release NAME` released the pin and ignored NAME (the protocol's release,
    `set: null`, names no profile); `profile "$NAME"` with NAME empty showed the profile
    and exited 0, as if it had pinned one."""
    res = run_cli(*args, "--socket", str(tmp_path / "none.sock"), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "cannot connect" not in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        *[(("simulate", "--board", "rk3588", "--scene", "office", "--model-ms", value),
           "argument --model-ms: must be a finite number above 0")
          for value in ("nan", "inf", "0", "-1")],
        (("simulate", "--board", "rk3588", "--scene", "office", "--model-ms", "x"),
         "argument --model-ms: not a number: 'x'"),
        (("probe", "--sysfs-root", ""), "argument --sysfs-root: an empty path"),
        (("probe", "--sysfs-root", "no-such-dir"),
         "argument --sysfs-root: not a directory: 'no-such-dir'"),
    ],
)
def test_power_arguments_that_cannot_work_are_usage_errors(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    """simulate --model-ms nan, inf, 0 or -1 printed a report of an impossible model ("nan
    ms an inference", NaN in --json); probe --sysfs-root '' read the real /sys, and a
    mistyped root reported a machine with nothing to steer, exit 0."""
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert res.stdout == ""


def test_an_empty_socket_variable_is_the_default_socket(tmp_path: Path) -> None:
    """It was taken for a path: "cannot connect to : Invalid argument"."""
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "WATTGATE_SOCKET": ""}
    done = subprocess.run([sys.executable, "-m", "wattgate.cli", "status"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, env=env)
    assert done.returncode == 69
    assert "cannot connect to /run/wattgate/wattgate.sock" in done.stderr, done.stderr


def test_watch_shows_power_and_overflow_messages_as_lines() -> None:
    """They were printed as raw JSON among the formatted results."""
    power = {"class": "power", "ts": 1763745600.0, "profile": "balanced",
             "reason": "default (power.profile)", "activity": "idle",
             "temperatures": {"soc-thermal": 41.2, "npu-thermal": 39.0, "broken": None},
             "watts": 3.1, "watts_source": "estimate", "joules": {"estimated": 1.46}}
    line = format_message(power)
    assert line.endswith(
        " power   balanced (default (power.profile)), idle, 3.10 W (estimate), "
        "soc-thermal 41.2 °C"
    ), line
    assert format_message({"class": "power", "ts": 0.0, "profile": "p", "reason": "r",
                           "activity": "active", "watts": None}).endswith(", active, - W (?)")
    assert format_message({"class": "overflow", "dropped": 7}) == (
        "overflow: 7 messages dropped (read too slowly)")
    assert format_message({"class": "novel", "x": 1}) == '{"class": "novel", "x": 1}'


def test_help_names_the_exit_codes_the_readme_gives(tmp_path: Path) -> None:
    """A script writer reads `wattgate --help`, not the README: it said no exit code."""
    import re

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"(?<![\w.-])(\d{1,3});?\s", section)}
    shown = run_cli("--help", cwd=tmp_path)
    assert shown.returncode == 0
    helped = shown.stdout.split("exit codes:", 1)[1]
    listed = {int(code) for code in re.findall(r"(?<![\w.-])(\d{1,3})\s", helped)}
    assert {0, 1, 2, 69, 75, 77, 78, 130} <= listed
    assert documented - {130} <= listed, documented - listed
    help_socket = run_cli("status", "--help", cwd=tmp_path).stdout
    assert "$WATTGATE_SOCKET" in help_socket
