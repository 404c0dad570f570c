"""Board detection on the fake boards, as on the real ones: from the device tree's root
`compatible` (firmware/devicetree/base/compatible), with power.board left unset.

A fake board without that file left the detection path untested on it, and the daemon
found no energy model there (no watts estimate) where the real board gives one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wattgate.boards import materialize
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController


@pytest.mark.parametrize("board", ["rk3588", "rpi5", "imx8mp"])
def test_a_device_tree_board_is_detected_from_its_compatible(tmp_path: Path, board: str) -> None:
    root = materialize(board, tmp_path / "sys")
    compatible = (root / "firmware/devicetree/base/compatible").read_bytes()
    assert len(compatible.split(b"\0")) > 2  # NUL-separated strings, board first then SoC
    cfg = parse_config({"power": {"sysfs_root": str(root),
                                  "journal_dir": str(tmp_path / "journal")}})
    pc = PowerController(cfg)
    pc.start(0.0)
    try:
        pc.tick(1.0)
        watts = pc.status()["watts"]
    finally:
        pc.stop()
    assert watts.get("model") == board, watts
    assert watts["source"] == "estimate"
