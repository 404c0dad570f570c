"""Values as an operator types them: percentages in the forms a frequency takes."""

from __future__ import annotations

import pytest

from wattgate.config import ConfigError, parse_config, parse_percent


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
