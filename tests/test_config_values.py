"""Values as an operator types them: percentages in the forms a frequency takes, and a key
given twice, refused with the key named (exit 78 from check-config)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
        "must be a number with a % sign, 0% to 100%"
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
    (tmp_path / "config.toml").write_text("[gate]\nthreshold = 30\n")
    (tmp_path / "config.d").mkdir()
    dropin = tmp_path / "config.d" / "10-gate.toml"
    dropin.write_text("[gate]\nthreshold = 40\nthreshold = 50\n")
    done = check_config(tmp_path / "config.toml")
    assert done.returncode == EXIT_CONFIG
    assert f"bad config {dropin}:" in done.stderr
    assert "gate.threshold is set twice" in done.stderr
    assert "(at line 3, column 15)" in done.stderr
