"""The command line, the config loader and the simulated board, held to what a sysadmin or
an integrator typing the commands expects: every error names what is wrong and where, with
the exit code that fits; a board that is listed works. Real processes and real files."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from wattgate.boards import materialize
from wattgate.drivers.sysfs import Sysfs
from wattgate.simkernel import WatchIO
from wattgate.simulate import Footage, Image, simulate

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattgate.cli", *args], capture_output=True, text=True,
        timeout=120, cwd=cwd, env={"PYTHONPATH": str(REPO)},
    )


# -- config errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key", "value"),
    [
        ("[profiles.x.idle]\ncpu_min_khz = true\n", "profiles.x.idle.cpu_min_khz", "True"),
        ("[profiles.x]\ncpu_governor = [1]\n", "profiles.x.cpu_governor", "[1]"),
        ('[model]\ndelegate_options = { device = [1] }\n', "model.delegate_options.device",
         "[1]"),
    ],
)
def test_a_key_that_takes_one_of_several_types_is_one_error_naming_the_key(
    tmp_path: Path, toml: str, key: str, value: str
) -> None:
    """A key typed "a frequency or N%" (or "a governor or a list") that got neither was
    reported once per type it could have been, under keys that do not exist:
    `cpu_min_khz.int`, `cpu_min_khz.str`, `cpu_governor.list[str].0`."""
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    res = run_cli("check-config", str(path))
    assert res.returncode == 78, res.stderr
    problems = res.stderr.splitlines()[1:]
    assert len(problems) == 1, res.stderr
    assert problems[0].startswith(f"  {key}: got {value}; must be "), res.stderr


def test_a_union_error_keeps_the_key_of_a_missing_required_table_key(tmp_path: Path) -> None:
    """Key parts that are not in the file are kept when they are real keys."""
    path = tmp_path / "bad.toml"
    path.write_text('[model.variants.small]\nkind = "ssd"\n')
    res = run_cli("check-config", str(path))
    assert res.returncode == 78
    assert "  model.variants.small.path: required key is missing" in res.stderr


def test_hidden_files_in_config_d_are_not_dropins(tmp_path: Path) -> None:
    """An editor's files beside a drop-in being edited (Emacs' `.#10-x.toml` lock, a
    symlink to nowhere; a `.10-x.toml` scratch copy) were read as drop-ins: the config was
    refused ("file not found") while a sysadmin had a drop-in open, and a reload kept the
    old one. systemd's conf.d reading skips hidden files; so does this."""
    (tmp_path / "config.toml").write_text("[gate]\nthreshold = 20\n")
    dropins = tmp_path / "config.d"
    dropins.mkdir()
    (dropins / "10-x.toml").write_text("[gate]\nthreshold = 25\n")
    (dropins / ".#10-x.toml").symlink_to("root@camera.4242:1700000000")
    (dropins / ".10-x.toml").write_text("[gate]\nthreshold = 99\nnot toml\n")
    res = run_cli("check-config", str(tmp_path / "config.toml"))
    assert res.returncode == 0, res.stderr
    from wattgate.config import load_config

    assert load_config(tmp_path / "config.toml").gate.threshold == 25


# -- simulate -----------------------------------------------------------------------------


def short_footage(frames: int = 20) -> Footage:
    """A few plain grey frames: enough to run every strategy once, fast."""

    def gen() -> Iterator[Image]:
        for _ in range(frames):
            yield np.full((120, 160, 3), 128, np.uint8)

    return Footage("grey", 10.0, frames, ((5, 8),), gen)


def listed_boards() -> list[str]:
    """The boards `wattgate simulate --board` offers, as argparse lists them."""
    res = run_cli("simulate", "--board", "?", "--scene", "office")
    assert res.returncode == 2
    found = re.search(r"choose from (.*)\)", res.stderr)
    assert found is not None, res.stderr
    return re.findall(r"'([^']+)'", found.group(1))


def test_every_board_simulate_lists_can_be_simulated() -> None:
    """`--board jetson-orin-nano` was offered by --help and refused by the run ("no energy
    model to simulate with"). A board is listed only when its energy model has a CPU or an
    NPU to steer; the Orin Nano's has neither (no DT coefficients, no NPU, and it measures
    itself with its INA3221 rails)."""
    boards = listed_boards()
    assert "rk3588" in boards and "jetson-orin-nano" not in boards
    for board in boards:
        report = simulate(board, short_footage(), model_ms=5.0)
        assert report["frames_total"] == 20, board


def test_simulate_names_the_boards_it_can_simulate() -> None:
    res = run_cli("simulate", "--board", "jetson-orin-nano", "--scene", "office",
                  "--model-ms", "5")
    assert res.returncode == 2
    assert "invalid choice: 'jetson-orin-nano'" in res.stderr and "'rk3588'" in res.stderr


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("[1]", 'not a JSON object {"fps": F, "events": [[first, last], ...]}'),
        ('{"events": []}', "no fps"),
        ('{"fps": 15}', "no events"),
        ('{"fps": true, "events": []}', "fps must be a number above 0, got true"),
        ('{"fps": "15", "events": []}', "fps must be a number above 0, got \"15\""),
        ('{"fps": 15, "events": [[1.5, 4]]}', "events[0]: [1.5, 4] is not [first, last]"),
        ('{"fps": 15, "events": [[1, 2, 3]]}', "events[0]: [1, 2, 3] is not [first, last]"),
        ('{"fps": 15, "events": {"a": 1}}', "events must be a list"),
        ("{", "not JSON: Expecting property name"),
        (b"\xff", "not UTF-8"),
    ],
)
def test_a_bad_labels_file_is_refused_saying_what_is_wrong(
    tmp_path: Path, labels: str | bytes, message: str
) -> None:
    """Python's own words came out ("list indices must be integers or slices, not str",
    "'fps'", "too many values to unpack"), and [1.5, 4] was taken as frames 1 to 4 and
    fps true as 1 fps without a word."""
    path = tmp_path / "labels.json"
    if isinstance(labels, bytes):
        path.write_bytes(labels)
    else:
        path.write_text(labels)
    res = run_cli("simulate", "--board", "rk3588", "--video", str(tmp_path / "v.avi"),
                  "--labels", str(path), "--model-ms", "1")
    assert res.returncode == 2, res.stderr
    assert f"labels {path}: {message}" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_labels_frame_written_as_a_whole_float_is_that_frame() -> None:
    from wattgate.simulate import parse_labels

    assert parse_labels({"fps": 15, "events": [[228.0, 289]]}, "x") == (15.0, ((228, 289),))


@pytest.mark.parametrize(
    ("model", "why"),
    [(None, "not found"), (b"garbage!", "not a TFLite flatbuffer")],
)
def test_simulate_with_a_model_that_cannot_load_exits_69_in_one_line(
    tmp_path: Path, model: bytes | None, why: str
) -> None:
    """The model is measured when no --model-ms is given; one that could not load ended
    simulate with a traceback and exit 1. `run` exits 69 for it; simulate now too."""
    path = tmp_path / "m.tflite"
    if model is not None:
        path.write_bytes(model)
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\npath = "{path}"\n')
    res = run_cli("simulate", "--board", "rk3588", "--scene", "office", "--config", str(config))
    assert res.returncode == 69, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wattgate simulate: model file {path}: {why}")


# -- the simulated kernel -----------------------------------------------------------------

POLICY = "devices/system/cpu/cpufreq/policy4"
NPU = "class/devfreq/fdab0000.npu"


def test_the_simulated_cpufreq_clamps_a_floor_above_the_ceiling(tmp_path: Path) -> None:
    """WatchIO took scaling_min_freq 2400000 under a scaling_max_freq of 1200000 and left
    the tree showing min > max, which no kernel shows. The kernel keeps the request and
    clamps the limits it applies: min to [cpuinfo_min, max], max to the cpuinfo range
    (cpufreq_verify_within_limits, include/linux/cpufreq.h), and a later higher ceiling
    lets the kept floor request apply again (freq QoS)."""
    fs = Sysfs(materialize("rk3588", tmp_path / "sys"), WatchIO())
    fs.write(f"{POLICY}/scaling_max_freq", "1200000")
    fs.write(f"{POLICY}/scaling_min_freq", "2400000")
    assert fs.read_int(f"{POLICY}/scaling_min_freq") == 1200000
    assert fs.read_int(f"{POLICY}/scaling_max_freq") == 1200000
    fs.write(f"{POLICY}/scaling_max_freq", "9999999")
    assert fs.read_int(f"{POLICY}/scaling_max_freq") == 2400000
    assert fs.read_int(f"{POLICY}/scaling_min_freq") == 2400000
    fs.write(f"{POLICY}/scaling_min_freq", "0")
    assert fs.read_int(f"{POLICY}/scaling_min_freq") == 408000


def test_the_simulated_devfreq_clamps_a_floor_above_the_ceiling(tmp_path: Path) -> None:
    """devfreq's get_freq_range (drivers/devfreq/devfreq.c) does the same: min_freq is
    never shown above max_freq, and a max_freq of 0 is no ceiling."""
    fs = Sysfs(materialize("rk3588", tmp_path / "sys"), WatchIO())
    fs.write(f"{NPU}/max_freq", "500000000")
    fs.write(f"{NPU}/min_freq", "800000000")
    assert fs.read_int(f"{NPU}/min_freq") == 500000000
    assert fs.read_int(f"{NPU}/max_freq") == 500000000
    fs.write(f"{NPU}/max_freq", "0")
    assert fs.read_int(f"{NPU}/max_freq") == 1000000000
    assert fs.read_int(f"{NPU}/min_freq") == 800000000


# -- bench --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("gate", "--repeats", "0"), "argument --repeats: must be 1 or more, got 0"),
        (("gate", "--repeats", "-3"), "argument --repeats: must be 1 or more, got -3"),
    ],
)
def test_bench_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    """--repeats 0 exited 1, as a failed run would, while --repeats x exited 2: a script
    could not tell bad usage from a failure."""
    res = run_cli("bench", *args, "--json")
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert res.stdout == ""


# -- probe --------------------------------------------------------------------------------


def test_probe_with_a_config_whose_sysfs_root_is_not_a_directory_is_a_config_error(
    tmp_path: Path,
) -> None:
    """--sysfs-root is checked, but a mistyped power.sysfs_root in --config was probed as a
    machine with nothing to steer or read, exit 0."""
    config = tmp_path / "c.toml"
    config.write_text(f'[power]\nsysfs_root = "{tmp_path / "sys"}"\n')
    res = run_cli("probe", "--config", str(config))
    assert res.returncode == 78, res.stdout
    assert res.stderr == (f"wattgate: bad config {config}:\n"
                          f"  power.sysfs_root: got '{tmp_path / 'sys'}'; not a directory\n")
    materialize("rk3588", tmp_path / "sys")
    res = run_cli("probe", "--config", str(config))
    assert res.returncode == 0 and "policy4" in res.stdout


def test_simulate_refuses_labels_with_a_scene(tmp_path: Path) -> None:
    """--labels with --scene was dropped without a word: the report scored the scene's own
    events while the user took it for theirs."""
    labels = tmp_path / "labels.json"
    labels.write_text('{"fps": 15, "events": [[1, 2]]}')
    res = run_cli("simulate", "--board", "rk3588", "--scene", "person", "--labels", str(labels),
                  "--model-ms", "1")
    assert res.returncode == 2, res.stderr
    assert "--labels goes with --video" in res.stderr and res.stdout == ""
