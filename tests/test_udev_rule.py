"""systemd/60-wattgate.rules grants group wattgate write on the attributes we drive."""

from __future__ import annotations

import re
from pathlib import Path

RULE = Path(__file__).resolve().parents[1] / "systemd" / "60-wattgate.rules"
DRIVEN = [
    "scaling_governor",
    "scaling_min_freq",
    "scaling_max_freq",
    "energy_performance_preference",
    "governor",
    "min_freq",
    "max_freq",
    "power/control",
    "power/autosuspend_delay_ms",
    "gpu_govern",
    "railgate_enable",
]


def rules() -> list[str]:
    text = RULE.read_text().replace("\\\n", " ")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_every_driven_attribute_is_covered() -> None:
    body = " ".join(rules())
    for attr in DRIVEN:
        assert re.search(rf"[/ ]{re.escape(attr)}\b", body), attr


def test_rules_are_well_formed() -> None:
    for line in rules():
        assert "ACTION==" in line and "SUBSYSTEM==" in line and "RUN+=" in line
        run = line.split("RUN+=", 1)[1]
        assert run.startswith('"/bin/sh -c ')
        assert "chgrp wattgate" in run and "chmod g+w" in run
        # udev treats a lone $ as a substitution: shell variables must be $$
        assert not re.search(r"(?<!\$)\$(?!\$)[a-z]", run)
        assert "chmod 0666" not in run and "o+w" not in run
