"""Values as an operator types them: percentages in the forms a frequency takes, and a key
given twice, refused with the key named (exit 78 from check-config)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import config_with_dropin
from wattgate.config import EXIT_CONFIG, ConfigError, load_config, parse_config, parse_percent


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattgate.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("text, percent", [
    ("0%", 0.0), ("50%", 50.0), ("12.5%", 12.5), ("100%", 100.0), (" 40% ", 40.0),
])
def test_plain_percentages_are_taken(text: str, percent: float) -> None:
    assert parse_percent(text) == percent


@pytest.mark.parametrize("text", [
    "1_0%",      # float() takes digit separators
    "５０%",     # and full-width (any Unicode) digits
    "1e1%",      # and exponents
    "+5%", "-0%", ".5%", "5.%", "nan%", "inf%", "50 %", "50%%", "50",
])
def test_other_number_forms_are_not_percentages(text: str) -> None:
    """float() read "1_0%" as 10 % and "５０%" as 50 %: a setting that looks like another
    number in a font or a review than the one the daemon takes."""
    assert parse_percent(text) is None


@pytest.mark.parametrize("text", ["1_0%", "５０%", "1e1%"])
def test_a_profile_refuses_them_as_it_refuses_nan(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"profiles": {"night": {"idle": {"cpu_max_khz": text}}}})
    assert caught.value.problems == [
        f"profiles.night.idle.cpu_max_khz: got {text!r}; "
        'must be digits with an optional fraction, then "%" ("50%", "12.5%"), 0% to 100%'
    ]


@pytest.mark.parametrize("toml, key, where", [
    ("[gate]\nthreshold = 30\nthreshold = 40\n", "gate.threshold", "line 3, column 15"),
    ('[gate]\n"threshold" = 30\n  threshold  =  40 # again\n', "gate.threshold",
     "line 3, column 19"),
    ("power.profile = 'balanced'\npower.profile = 'powersave'\n", "power.profile",
     "line 2, column 28"),
    # a multi-line value: tomllib reports where the value ends, not the key's line
    ('[power]\nruntime_pm_devices = []\nruntime_pm_devices = [\n  "a",\n]\n',
     "power.runtime_pm_devices", "line 5, column 2"),
    ("[[rules]]\nname = 'a'\nname = 'b'\n", "rules.name", "line 3, column 11"),
    # a value, then a table of the same name
    ("gate = 1\n[gate]\n", "gate", "line 2, column 6"),
    # an array of arrays over several lines: its last element is no table header
    ('[power]\nruntime_pm_devices = []\nruntime_pm_devices = [\n  ["a"],\n  ["b"]\n]\n',
     "power.runtime_pm_devices", "line 6, column 2"),
])
def test_a_key_given_twice_is_named(tmp_path: Path, toml: str, key: str, where: str) -> None:
    """tomllib says only "Cannot overwrite a value (at line 3, column 15)": in a long file
    the operator had to count lines to find which key."""
    path = tmp_path / "config.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    [problem] = caught.value.problems
    assert problem.startswith(f"not valid TOML: {key} is set twice")
    assert f"(at {where})" in problem


def test_check_config_names_the_key_and_the_dropin(tmp_path: Path) -> None:
    main, dropin = config_with_dropin(tmp_path, "[gate]\nthreshold = 30\n",
                                      "[gate]\nthreshold = 40\nthreshold = 50\n")
    done = check_config(main)
    assert done.returncode == EXIT_CONFIG
    assert f"bad config {dropin}:" in done.stderr
    assert "gate.threshold is set twice" in done.stderr
    assert "(at line 3, column 15)" in done.stderr


# -- a floor above its ceiling ----------------------------------------------------------------


@pytest.mark.parametrize("table, floor, ceiling", [
    ({"idle": {"cpu_min_khz": "100%", "cpu_max_khz": "10%"}},
     ("idle.cpu_min_khz", "'100%'"), ("idle.cpu_max_khz", "'10%'")),
    ({"active": {"npu_min_hz": 2_000_000_000, "npu_max_hz": 500_000_000}},
     ("active.npu_min_hz", "2000000000"), ("active.npu_max_hz", "500000000")),
    # the profile's own floor, under a ceiling its state table sets
    ({"cpu_min_khz": 1_800_000, "idle": {"cpu_max_khz": 408_000}},
     ("cpu_min_khz", "1800000"), ("idle.cpu_max_khz", "408000")),
])
def test_a_floor_above_its_ceiling_is_refused(
    tmp_path: Path, table: dict[str, object], floor: tuple[str, str], ceiling: tuple[str, str]
) -> None:
    """It passed check-config, and at run time the floor came down to the ceiling without a
    word: the operator's floor was not what the board ran at."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"profiles": {"night": table}}, "config.toml")
    assert caught.value.problems == [
        f"profiles.night.{floor[0]}: got {floor[1]}; a floor above its ceiling "
        f"profiles.night.{ceiling[0]} = {ceiling[1]}; it would be lowered to the ceiling"
    ]


@pytest.mark.parametrize("table", [
    {"idle": {"cpu_min_khz": "50%", "cpu_max_khz": "50%"}},       # equal
    {"idle": {"cpu_min_khz": "100%", "cpu_max_khz": 408_000}},    # forms differ: the board's
    {"npu_min_hz": 1_000_000_000, "npu_max_hz": "10%"},
    {"idle": {"cpu_min_khz": "90%"}, "active": {"cpu_max_khz": "10%"}},  # other states
])
def test_floors_that_only_a_board_can_judge_are_taken(table: dict[str, object]) -> None:
    parse_config({"profiles": {"night": table}})


def test_a_dropin_ceiling_under_a_builtin_floor_names_both(tmp_path: Path) -> None:
    """performance holds its NPU floor at "100%"; a drop-in that caps its ceiling at "50%"
    would run at the floor lowered to 50 %. The error is on the drop-in's key."""
    main, dropin = config_with_dropin(tmp_path, "[gate]\nthreshold = 30\n",
                                      '[profiles.performance]\nnpu_max_hz = "50%"\n'
                                      '[profiles.balanced.idle]\ncpu_min_khz = "60%"\n')
    done = check_config(main)
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.splitlines()[1:] == [
        "  profiles.performance.npu_max_hz: got '50%'; a ceiling below its floor "
        "profiles.performance.npu_min_hz = '100%' (built in); the floor would be lowered "
        f"to it (set in {dropin})",
        "  profiles.balanced.idle.cpu_min_khz: got '60%'; a floor above its ceiling "
        "profiles.balanced.idle.cpu_max_khz = '40%' (built in); it would be lowered to the "
        f"ceiling (set in {dropin})",
    ]


def test_the_other_key_is_named_with_its_dropin(tmp_path: Path) -> None:
    main, dropin = config_with_dropin(tmp_path,
                                      '[profiles.night.active]\nnpu_min_hz = 900000000\n',
                                      '[profiles.night.active]\nnpu_max_hz = 600000000\n')
    with pytest.raises(ConfigError) as caught:
        load_config(main)
    assert caught.value.problems == [
        "profiles.night.active.npu_min_hz: got 900000000; a floor above its ceiling "
        f"profiles.night.active.npu_max_hz = 600000000 (set in {dropin}); it would be "
        "lowered to the ceiling"
    ]
