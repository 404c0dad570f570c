"""Drop-ins over the main file: which file an error names, what a drop-in's array replaces,
and how the file that set each key is followed over many keys."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import DaemonProcess, write_config
from wattgate.config import ConfigError, load_config, load_raw


def _config(tmp_path: Path, main: str, **dropins: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(main)
    (tmp_path / "config.d").mkdir()
    for name, text in dropins.items():
        (tmp_path / "config.d" / name).write_text(text)
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_a_dropin_table_over_a_value_of_the_main_file_names_the_dropin(tmp_path: Path) -> None:
    """The table came from the drop-in: naming no file sent the user to the main file,
    whose `threshold = 30` is valid."""
    path = _config(tmp_path, "[gate]\nthreshold = 30\n",
                   **{"50-site.toml": "[gate.threshold]\nvalue = 40\n"})
    dropin = tmp_path / "config.d" / "50-site.toml"
    assert _problems(path) == [
        f"gate.threshold: got {{'value': 40}}; Input should be a valid integer (set in {dropin})"
    ]


def test_a_dropin_table_over_a_value_of_an_earlier_dropin_names_the_later(
    tmp_path: Path,
) -> None:
    path = _config(tmp_path, "", **{
        "10-vendor.toml": "[gate]\nthreshold = 30\n",
        "50-site.toml": "[gate.threshold]\nvalue = 40\n",
    })
    dropin = tmp_path / "config.d" / "50-site.toml"
    assert _problems(path) == [
        f"gate.threshold: got {{'value': 40}}; Input should be a valid integer (set in {dropin})"
    ]


def test_a_table_merged_into_keeps_the_file_that_opened_it(tmp_path: Path) -> None:
    """A drop-in adding a key to a table owns that key, not the table's other keys."""
    path = _config(tmp_path, '[camera]\nfps = "fast"\n',
                   **{"50-site.toml": "[camera]\nwidth = 1280\n"})
    assert _problems(path) == ["camera.fps: got 'fast'; Input should be a valid number"]


def test_origins_over_many_keys(tmp_path: Path) -> None:
    """Thousands of keys (a generated table of delegate options or of profiles), some of
    them tables a later file replaces with a value or a value it replaces with a table:
    each key path is owned by the file that set it last, and nothing is left of a table
    a value replaced."""
    count = 3000
    main = "".join(f"[t{i}]\na = 1\nb = {{c = 2}}\n" for i in range(count))
    dropin = "".join(
        f"[t{i}]\nb = 5\n" if i % 2 else f"[t{i}.a]\nd = 3\n" for i in range(count)
    )
    path = _config(tmp_path, main, **{"50-site.toml": dropin})
    origins: dict[tuple[str, ...], str] = {}
    load_raw(path, origins)
    site = str(tmp_path / "config.d" / "50-site.toml")
    expected: dict[tuple[str, ...], str] = {}
    for i in range(count):
        table = f"t{i}"
        expected[(table,)] = str(path)
        if i % 2:  # b's table became a value
            expected[(table, "a")] = str(path)
            expected[(table, "b")] = site
        else:  # a's value became a table
            expected[(table, "a")] = site
            expected[(table, "a", "d")] = site
            expected[(table, "b")] = str(path)
            expected[(table, "b", "c")] = str(path)
    assert origins == expected


class _CountedOrigins(dict[tuple[str, ...], str]):
    """Origins that count the key paths looked at by going through all of them."""

    visits = 0

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        for key in super().__iter__():
            type(self).visits += 1
            yield key


def test_following_origins_does_not_go_through_every_key_for_each_key(tmp_path: Path) -> None:
    """Each value set went through every key path recorded so far: 8000 keys took seconds,
    on the event loop of a reloading daemon. The work grows with the keys, not their square."""
    count = 2000
    path = _config(tmp_path, "[model.delegate_options]\n"
                   + "".join(f"k{i} = {i}\n" for i in range(count)))
    origins = _CountedOrigins()
    _CountedOrigins.visits = 0
    load_raw(path, origins)
    assert len(origins) == count + 2
    assert _CountedOrigins.visits <= 4 * count


RULES = """
[[rules]]
name = "battery"
on_battery = true
profile = "powersave"

[[rules]]
name = "dark"
lux_below = 2.0
profile = "powersave"
"""


def test_a_dropins_rules_replace_the_main_files_and_the_config_says_so(tmp_path: Path) -> None:
    """Arrays are values: a drop-in's [[rules]] replace the whole array. That is said,
    naming both files and how many rules were left out, so an added thermal rule does not
    drop the battery rule without a word."""
    hot = '[[rules]]\nname = "hot"\ntemp_above_c = 85.0\nprofile = "powersave"\n'
    path = _config(tmp_path, RULES, **{"50-thermal.toml": hot})
    cfg = load_config(path)
    assert [rule.name for rule in cfg.rules] == ["hot"]
    dropin = tmp_path / "config.d" / "50-thermal.toml"
    assert cfg.notes == [
        f"rules: {dropin} replaces the whole array set in {path}, leaving out 2 of its 2 "
        "entries (arrays are not merged: repeat the entries to keep)"
    ]


def test_a_dropin_that_repeats_the_rules_it_keeps_is_not_noted(tmp_path: Path) -> None:
    hot = '[[rules]]\nname = "hot"\ntemp_above_c = 85.0\nprofile = "powersave"\n'
    path = _config(tmp_path, RULES, **{"50-thermal.toml": hot + RULES})
    cfg = load_config(path)
    assert [rule.name for rule in cfg.rules] == ["hot", "battery", "dark"]
    assert cfg.notes == []


def test_a_dropin_that_repeats_the_rules_with_one_changed_is_not_noted(tmp_path: Path) -> None:
    """What README and config.toml say to do: repeat the rules, here with the dark rule's
    threshold raised. A rule is known by its name; it was said to be left out."""
    changed = RULES.replace("lux_below = 2.0", "lux_below = 5.0")
    path = _config(tmp_path, RULES, **{"50-site.toml": changed})
    cfg = load_config(path)
    assert [rule.lux_below for rule in cfg.rules] == [None, 5.0]
    assert cfg.notes == []


@pytest.mark.parametrize("main, dropin, expected", [
    ("", 'rules = [{name = "hot", temp_above_c = 85.0, profile = "powersave"}]\n', []),
    ("[power]\nruntime_pm_devices = []\n", '[power]\nruntime_pm_devices = ["a"]\n', []),
    ('[power]\nruntime_pm_devices = ["a", "b"]\n', '[power]\nruntime_pm_devices = ["b"]\n',
     ["power.runtime_pm_devices: {dropin} replaces the whole array set in {main}, leaving out "
      "1 of its 2 entries (arrays are not merged: repeat the entries to keep)"]),
])
def test_which_arrays_are_noted(tmp_path: Path, main: str, dropin: str,
                                expected: list[str]) -> None:
    """Only an array that loses entries: one set where there was none, or an empty one,
    loses nothing."""
    path = _config(tmp_path, main, **{"50-site.toml": dropin})
    names: dict[str, Any] = {"dropin": tmp_path / "config.d" / "50-site.toml", "main": path}
    assert load_config(path).notes == [line.format(**names) for line in expected]


def test_a_reload_logs_the_rules_a_dropin_left_out(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    """The daemon says what check-config says: a journal read after the board ran on
    battery at full clocks finds why."""
    daemon = start_daemon(camera={"source": "synthetic:empty", "width": 320, "height": 240})
    daemon.connect().close()
    with daemon.config.open("a") as main:
        main.write(RULES)
    dropin = daemon.config.parent / "config.d" / "50-thermal.toml"
    dropin.parent.mkdir()
    dropin.write_text('[[rules]]\nname = "hot"\ntemp_above_c = 85.0\nprofile = "powersave"\n')
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30.0
    while "reloaded" not in daemon.log():
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    assert (f"reload: rules: {dropin} replaces the whole array set in {daemon.config}, "
            "leaving out 2 of its 2 entries") in daemon.log()


def test_check_config_and_the_start_say_which_rules_a_dropin_left_out(
    start_daemon: Callable[..., DaemonProcess], tmp_path: Path,
) -> None:
    """check-config passes such a config (it is valid) with the note as a warning, and the
    daemon logs the note as it starts, as it does at a reload."""
    daemon_dir = tmp_path / "daemon"
    daemon_dir.mkdir()
    hot = '[[rules]]\nname = "hot"\ntemp_above_c = 85.0\nprofile = "powersave"\n'
    path = _config(daemon_dir, RULES, **{"50-thermal.toml": hot})
    dropin = daemon_dir / "config.d" / "50-thermal.toml"
    said = f"rules: {dropin} replaces the whole array set in {path}, leaving out 2 of its 2"
    check = subprocess.run([sys.executable, "-m", "wattgate.cli", "check-config", str(path)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert said in check.stdout + check.stderr, (check.stdout, check.stderr)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = write_config(run_dir / "config.toml", run_dir,
                          camera={"source": "synthetic:empty", "width": 320, "height": 240})
    with config.open("a") as main:
        main.write(RULES)
    (run_dir / "config.d").mkdir()
    (run_dir / "config.d" / "50-thermal.toml").write_text(hot)
    daemon = start_daemon(config=config)
    daemon.connect().close()
    assert daemon.stop() == 0
    assert "leaving out 2 of its 2 entries" in daemon.log(), daemon.log()
