"""Upper bounds of the config's durations, rates and sizes.

Without one, `gate.cooldown_s = 1e300` passed check-config and the daemon ran with it:
`wattgate status` printed a 300-digit number, and a timer of that length is a daemon that
never leaves a state. Each key below has a bound no real deployment comes near; the value
one past it is refused with exit 78, naming the key and the file that set it. Real files,
the command line's own check-config.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import config_with_dropin
from wattgate import cli
from wattgate.config import EXIT_CONFIG, ConfigError, load_config

# (table as TOML writes it, key, the largest value taken, a value past it)
BOUNDED = [
    ("daemon", "events_max", 100_000_000, 100_000_001),
    ("daemon", "events_max_age_days", 3653.0, 3654.0),
    ("daemon", "events_max_bytes", 64 << 30, (64 << 30) + 1),
    ("camera", "stall_s", 3600.0, 3601.0),
    ("camera", "reopen_max_s", 3600.0, 3601.0),
    ("camera", "fps", 240.0, 241.0),
    ("gate", "min_area", 8192 * 8192, 8192 * 8192 + 1),
    ("gate", "cooldown_s", 86400.0, 1e300),
    ("gate", "heartbeat_s", 86400.0, 86401.0),
    ("sensors", "light_poll_s", 60.0, 61.0),
    ("sensors", "light_jump_ratio", 1e6, 1.0000001e6),
    ("sensors", "light_min_delta_lux", 200_000.0, 200_001.0),
    ("sensors", "light_suppress_s", 3600.0, 3601.0),
    ("sensors", "pir_poll_s", 10.0, 11.0),
    ("sensors", "pir_hold_s", 86400.0, 86401.0),
    ("power", "cooldown_s", 86400.0, 86401.0),
    ("profiles.balanced", "cooldown_s", 86400.0, 86401.0),
    ("profiles.balanced.idle", "npu_autosuspend_ms", 86_400_000, 86_400_001),
    ("profiles.balanced.idle", "capture_fps", 1000.0, 1001.0),
    ("profiles.balanced.active", "max_infer_fps", 1000.0, 1001.0),
]


# (key of a [[rules]] entry, the largest value taken, a value past it, the smallest taken)
RULE_BOUNDED = [
    ("temp_above_c", 249.9, 250.0, -273.15),
    ("hysteresis_c", 250.0, 250.1, 0.0),
    ("lux_below", 200_000.0, 200_001.0, 1e-3),
    ("lux_above", 200_000.0, 200_001.0, 0.0),
    ("hysteresis_lux", 200_000.0, 200_001.0, 0.0),
]


def _toml(table: str, key: str, value: object) -> str:
    return f"[{table}]\n{key} = {value!r}\n"


def _rule(key: str, value: float) -> str:
    condition = "" if key in ("temp_above_c", "lux_below", "lux_above") else "on_battery = true\n"
    return f'[[rules]]\nprofile = "powersave"\n{condition}{key} = {value!r}\n'


def _taken(tmp_path: Path, text: str) -> None:
    """A config file of `text` loads."""
    path = tmp_path / "taken.toml"
    path.write_text(text)
    load_config(path)


def _problems(tmp_path: Path, text: str) -> list[str]:
    """The problems a config file of `text` is refused with."""
    path = tmp_path / "refused.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def _keys(problems: list[str]) -> list[str]:
    return [line.split(":")[0] for line in problems]


@pytest.mark.parametrize(("table", "key", "largest", "past"), BOUNDED,
                         ids=[f"{t}.{k}" for t, k, _, _ in BOUNDED])
def test_the_largest_value_is_taken_and_the_next_refused(
    tmp_path: Path, table: str, key: str, largest: object, past: object
) -> None:
    _taken(tmp_path, _toml(table, key, largest))
    assert _keys(_problems(tmp_path, _toml(table, key, past))) == [f"{table}.{key}"]


def test_check_config_refuses_a_huge_cooldown_naming_the_key_and_the_dropin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1e300 is finite, so allow_inf_nan=False let it through."""
    path, dropin = config_with_dropin(tmp_path, "", "[gate]\ncooldown_s = 1e300\n")
    assert cli.main(["check-config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"bad config {path}:" in err
    assert "gate.cooldown_s: got 1e+300; Input should be less than or equal to 86400" in err
    assert f"(set in {dropin})" in err


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_infinite_and_nan_durations_are_refused(tmp_path: Path, value: str) -> None:
    text = f"[power]\ncooldown_s = {value}\n[gate]\nheartbeat_s = {value}\n"
    problems = _problems(tmp_path, text)
    assert sorted(_keys(problems)) == ["gate.heartbeat_s", "power.cooldown_s"]


@pytest.mark.parametrize(("key", "largest", "past", "smallest"), RULE_BOUNDED,
                         ids=[key for key, *_ in RULE_BOUNDED])
def test_a_rules_thresholds_are_bounded_by_what_sensors_read(
    tmp_path: Path, key: str, largest: float, past: float, smallest: float
) -> None:
    """A temperature no zone reading is taken at (thermal.read_zone drops those from
    250 °C as a broken sensor's), or light past direct sunlight, is a threshold no board
    reaches: a unit mixed up (millidegrees, as sysfs gives them)."""
    for value in (largest, smallest):
        _taken(tmp_path, _rule(key, value))
    assert _keys(_problems(tmp_path, _rule(key, past))) == [f"rules.0.{key}"]


def test_a_temperature_below_absolute_zero_is_refused(tmp_path: Path) -> None:
    assert _problems(tmp_path, _rule("temp_above_c", -273.16)) == [
        "rules.0.temp_above_c: got -273.16; Input should be greater than or equal to -273.15"]
