"""`wattgate probe` names the governors built as modules and not loaded yet: a profile may
ask for them (writing the name loads the module), so an integrator writing profiles from
probe's output must see them. A fake rk3588 tree beside a fake module tree
(tests/test_governor_modules.py), read through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_governor_modules import CONSERVATIVE, NPU, POWERSAVE, board, module_tree

REPO = Path(__file__).resolve().parent.parent


def probe(root: Path, *args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "wattgate.cli", "probe", "--sysfs-root",
                          str(root), *args], capture_output=True, text=True, timeout=120,
                         cwd=REPO, env={"PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_probe_lists_the_loadable_governors(tmp_path: Path) -> None:
    root = board(tmp_path)
    (root / NPU / "available_governors").write_text("rknpu_ondemand performance\n")
    module_tree(tmp_path, [CONSERVATIVE, POWERSAVE,
                           "kernel/drivers/devfreq/governor_simpleondemand.ko"])
    text = probe(root)
    policy_lines = [line for line in text.splitlines() if line.startswith("  policy")]
    assert policy_lines and all("+ loadable [conservative powersave]" in line
                                for line in policy_lines), text
    npu_line = next(line for line in text.splitlines() if "fdab0000.npu: governor" in line)
    assert "+ loadable [simple_ondemand]" in npu_line
    data = json.loads(probe(root, "--json"))
    assert data["policies"][0]["loadable"] == ["conservative", "powersave"]


def test_probe_says_nothing_of_modules_where_there_are_none(tmp_path: Path) -> None:
    root = board(tmp_path)
    assert "loadable" not in probe(root)
