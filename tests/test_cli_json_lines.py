"""`probe --json` and `simulate --json` print one JSON object on one line, as every client
command's --json does: a pretty-printed report (333 lines for a probe) cut by `| head`, or
read a line at a time by a script, was text that did not parse. Their text output stays as
it is. Both commands run in this process on a fake board laid out like a real one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wattgate import cli
from wattgate.boards import materialize


def one_json_line(out: str) -> dict[str, Any]:
    """The one object of a --json output that is one line, ended by a newline."""
    assert out.endswith("\n") and out.count("\n") == 1, out[:400]
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


def test_probe_json_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    assert cli.main(["probe", "--sysfs-root", str(root), "--json"]) == 0
    data = one_json_line(capsys.readouterr().out)
    assert [p["name"] for p in data["policies"]] == ["policy0", "policy4", "policy6"]
    assert cli.main(["probe", "--sysfs-root", str(root)]) == 0
    assert len(capsys.readouterr().out.splitlines()) > 1  # the text for people is unchanged


def test_simulate_json_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", "--board", "rk3588", "--scene", "person", "--model-ms", "2"]
    assert cli.main([*args, "--json"]) == 0
    report = one_json_line(capsys.readouterr().out)
    assert report["frames_total"] and "baselines" in report
    assert cli.main(args) == 0
    assert len(capsys.readouterr().out.splitlines()) > 1
