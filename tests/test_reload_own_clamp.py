"""A floor a reload starts to drive is read after the daemon lowered its ceiling.

The kernel clamps a policy's min to its max: cpufreq_set_policy() takes both from the freq
QoS aggregates and cpufreq_verify_within_limits() (include/linux/cpufreq.h) sets
policy->min = clamp(policy->min, min, policy->max), which scaling_min_freq shows; devfreq's
min_freq shows devfreq_get_freq_range()'s min, clamped to its max the same way
(drivers/devfreq/devfreq.c). A user floor above the ceiling the daemon wrote reads as that
ceiling. A plain reload that made the daemon drive such a floor journaled the daemon's own
ceiling as the user's floor, and the exit wrote it back for good.

A plain file cannot clamp, so ``Clamping`` shows min files as the kernel would: the lower of
the request the file holds and the max file beside it. Everything else is the rk3588 tree.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_power_controller import CPU, NPU, make, read
from wattgate.drivers.sysfs import OsIO

BIG_MIN, BIG_MAX = f"{CPU}/policy4/scaling_min_freq", f"{CPU}/policy4/scaling_max_freq"
NPU_MIN, NPU_MAX = f"{NPU}/min_freq", f"{NPU}/max_freq"
#: min attribute -> the max it is clamped to (cpufreq, devfreq)
MAX_OF = {"scaling_min_freq": "scaling_max_freq", "min_freq": "max_freq"}


class Clamping(OsIO):
    """OS I/O whose reads of a min attribute show it clamped to the max beside it, as the
    kernel shows policy->min and devfreq's min; the files hold the requests."""

    def read_text(self, path: Path) -> str:
        text = super().read_text(path)
        ceiling = MAX_OF.get(path.name)
        if ceiling is None:
            return text
        return f"{min(int(text), int(super().read_text(path.parent / ceiling)))}\n"


def test_a_floor_first_driven_by_a_reload_is_the_one_read_before_the_daemons_ceiling(
    tmp_path: Path,
) -> None:
    root = tmp_path / "sys"
    pc, _ = make(tmp_path, io=Clamping())
    (root / BIG_MIN).write_text("1416000\n")  # the user's floors, above the idle ceilings
    (root / NPU_MIN).write_text("600000000\n")
    pc.start(0.0)
    assert (read(root, BIG_MAX), read(root, NPU_MAX)) == ("1200000", "300000000")  # idle
    assert Clamping().read_text(root / BIG_MIN) == "1200000\n"  # what the kernel shows now
    floors = make(tmp_path, profiles={"balanced": {"cpu_min_khz": "0%", "npu_min_hz": "0%"}})
    pc.reload(floors[0].cfg, 1.0)
    assert (pc.baseline[BIG_MIN], pc.baseline[NPU_MIN]) == ("1416000", "600000000")
    assert pc.journal is not None and pc.journal.original(BIG_MIN) == "1416000\n"
    assert pc.status()["knobs"][NPU_MIN]["original"] == "600000000"
    pc.stop()
    assert (read(root, BIG_MIN), read(root, NPU_MIN)) == ("1416000", "600000000")
    assert (read(root, BIG_MAX), read(root, NPU_MAX)) == ("2400000", "1000000000")
