"""A [profiles.NAME] table of a built-in profile's name merges over it key by key, as every
other table does: a drop-in that changes one knob of balanced changes that knob only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import config_with_dropin
from tests.fixtures.boards import materialize
from wattgate.config import BUILTIN_PROFILES, Config, load_config
from wattgate.daemon.power import PowerController
from wattgate.policies.gating import GateVerdict
from wattgate.policies.profiles import Settings, resolve_all

CPU = "devices/system/cpu/cpufreq"
NPU = "class/devfreq/fdab0000.npu"
NPU_DEV = "devices/platform/fdab0000.npu"
MOTION = GateVerdict(True, "motion", 0.1, True, ((0, 0, 10, 10),))
HANG_S = 30.0  # a hang guard for settle(), never a timing


def read(root: Path, attribute: str) -> str:
    return (root / attribute).read_text().strip()


def test_a_dropin_setting_one_key_keeps_the_rest_of_the_builtin(tmp_path: Path) -> None:
    """It replaced balanced whole: no description, no governor, the NPU left powered at
    its top clock while idle, and no active settings, while check-config said ok."""
    path, _ = config_with_dropin(tmp_path, "[gate]\nthreshold = 30\n",
                              '[profiles.balanced.idle]\ncpu_max_khz = "0%"\n')
    cfg = load_config(path)
    builtin = resolve_all(Config())["balanced"]
    mine = resolve_all(cfg)["balanced"]
    assert mine.description == builtin.description
    assert mine.idle == Settings(**{**builtin.idle.__dict__, "cpu_max_khz": "0%"})
    assert mine.active == builtin.active
    # inspection includes balanced, and still inherits what balanced sets at idle
    assert resolve_all(cfg)["inspection"].idle.npu_runtime_pm == "auto"
    done = subprocess.run([sys.executable, "-m", "wattgate.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == f"{path}: ok\n"


def test_a_key_set_for_the_whole_profile_is_not_hidden_by_the_builtin_states(
    tmp_path: Path,
) -> None:
    """A state's own value comes before the profile's: merged in, the built-in's idle and
    active ceilings hid `cpu_max_khz = "30%"` set for balanced as a whole, in both states,
    while check-config said ok. A state the file sets itself still comes first."""
    path = tmp_path / "config.toml"
    path.write_text('[profiles.balanced]\ncpu_max_khz = "30%"\n'
                    '[profiles.powersave]\ncpu_max_khz = "20%"\n'
                    '[profiles.powersave.active]\ncpu_max_khz = "60%"\n')
    profiles = resolve_all(load_config(path))
    builtin = resolve_all(Config())
    assert (profiles["balanced"].idle.cpu_max_khz, profiles["balanced"].active.cpu_max_khz) \
        == ("30%", "30%")
    assert (profiles["powersave"].idle.cpu_max_khz, profiles["powersave"].active.cpu_max_khz) \
        == ("20%", "60%")
    assert profiles["balanced"].idle.npu_max_hz == builtin["balanced"].idle.npu_max_hz


def test_the_main_file_merges_over_the_builtin_too(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[profiles.performance]\ndescription = "bench"\n'
                    '[profiles.powersave.active]\nmax_infer_fps = 1.0\n')
    profiles = load_config(path).profiles
    assert profiles["performance"].description == "bench"
    assert profiles["performance"].npu_min_hz == "100%"
    assert profiles["performance"].cpu_governor == ["performance"]
    assert profiles["powersave"].active.max_infer_fps == 1.0
    assert profiles["powersave"].active.npu_max_hz == "50%"
    assert profiles["powersave"].idle.capture_fps == 5.0
    assert profiles["powersave"].include == "balanced"


def test_a_list_replaces_the_builtin_list(tmp_path: Path) -> None:
    """A list is a value, as everywhere in the file: the operator's governors, not the
    built-in ones with them appended."""
    path = tmp_path / "config.toml"
    path.write_text('[profiles.balanced]\ncpu_governor = ["ondemand"]\n')
    assert load_config(path).profiles["balanced"].cpu_governor == ["ondemand"]
    assert BUILTIN_PROFILES["balanced"]["cpu_governor"] == ["schedutil", "ondemand", "powersave"]


def test_a_new_profile_starts_from_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[profiles.night.idle]\ncpu_max_khz = "0%"\n')
    night = resolve_all(load_config(path))["night"]
    assert night.description == ""
    assert night.idle == Settings(cpu_max_khz="0%") and night.active == Settings()


def test_the_power_controller_writes_the_merged_profile(tmp_path: Path) -> None:
    """What the daemon writes from such a drop-in on a fake RK3588: the changed ceiling,
    and everything else balanced asks for, idle and active."""
    root = tmp_path / "sys"
    materialize("rk3588", root)
    path, _ = config_with_dropin(
        tmp_path,
        f'[power]\nsysfs_root = "{root}"\njournal_dir = "{tmp_path / "journal"}"\n',
        '[profiles.balanced.idle]\ncpu_max_khz = "0%"\n')
    pc = PowerController(load_config(path))
    pc.start(0.0)
    assert pc.settle(HANG_S)
    assert read(root, f"{CPU}/policy0/scaling_max_freq") == "408000"  # the drop-in's 0 %
    assert read(root, f"{NPU_DEV}/power/control") == "auto"  # balanced's, kept
    assert read(root, f"{NPU_DEV}/power/autosuspend_delay_ms") == "100"
    assert read(root, f"{NPU}/max_freq") == "300000000"
    pc.on_gate(MOTION, 1.0)
    assert read(root, f"{NPU}/governor") == "performance"
    assert read(root, f"{NPU}/max_freq") == "1000000000"
    assert read(root, f"{CPU}/policy0/scaling_max_freq") == "1800000"
    pc.stop()
