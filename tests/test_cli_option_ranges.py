"""`events --since/--limit` and `snap --timeout-ms` outside what the daemon takes are usage
errors: exit 2 with argparse's line naming the option and its range, before anything
connects. They were sent to the daemon, whose bad_request made the exit 1 (or, with no
daemon there, 69), as if something had gone wrong at run time. The socket named here does
not exist: an option that got through would be a connection attempt, not a usage error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wattgate import cli
from wattgate.daemon import commands


@pytest.mark.parametrize(("argv", "option", "accepted"), [
    (["events", "--since", "-5"], "--since", f"0..{2**62}"),
    (["events", "--since", str(2**62 + 1)], "--since", f"0..{2**62}"),
    (["events", "--limit", "0"], "--limit", "1..1000"),
    (["events", "--limit", "1001"], "--limit", "1..1000"),
    (["snap", "--timeout-ms", "0"], "--timeout-ms", "1..60000"),
    (["snap", "--timeout-ms", "999999"], "--timeout-ms", "1..60000"),
    (["snap", "--timeout-ms", "-1"], "--timeout-ms", "1..60000"),
    (["snap", "--timeout-ms", "5s"], "--timeout-ms", "1..60000"),
])
def test_a_value_out_of_range_is_a_usage_error_before_connecting(
    argv: list[str], option: str, accepted: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--socket", str(tmp_path / "no-daemon.sock")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}: " in err
    assert accepted in err
    assert "cannot connect" not in err


@pytest.mark.parametrize("argv", [
    ["events", "--since", "0", "--limit", "1"],
    ["events", "--since", str(2**62), "--limit", "1000"],
    ["snap", "--timeout-ms", "1"],
    ["snap", "--timeout-ms", "60000"],
])
def test_the_ends_of_each_range_are_taken(argv: list[str], tmp_path: Path) -> None:
    """Taken, they get as far as connecting: no daemon there, exit 69."""
    assert cli.main([*argv, "--socket", str(tmp_path / "no-daemon.sock")]) == 69


def test_the_ranges_are_the_daemons() -> None:
    """The command line refuses exactly what the daemon would answer bad_request to."""
    assert cli.EVENTS_SINCE == (0, commands.MAX_EVENT_SEQ)
    assert cli.EVENTS_LIMIT == (1, commands.MAX_EVENTS_PER_REPLY)
    assert cli.SNAP_TIMEOUT_MS == (1, commands.MAX_SNAP_TIMEOUT_MS)
