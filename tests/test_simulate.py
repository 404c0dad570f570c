"""`wattgate simulate` and `wattgate probe`: the emulated kernel, the report, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_face_video
from tests.fixtures.boards import energy_model, materialize
from wattgate.drivers.sysfs import Sysfs
from wattgate.policies.energy import board_power
from wattgate.simkernel import SimBoard, WatchIO
from wattgate.simulate import recall, scene_footage, simulate

KEYS = {"energy_j", "mean_power_w", "event_recall", "frames_inferred", "frames_total"}
NPU = "class/devfreq/fdab0000.npu"
NPU_DEV = "devices/platform/fdab0000.npu"
CPU = "devices/system/cpu/cpufreq"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattgate.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_recall_counts_an_event_caught_in_its_first_two_frames() -> None:
    events = [(10, 20), (50, 51), (90, 90)]
    assert recall(events, {11, 52, 90}) == pytest.approx(2 / 3)
    assert recall(events, {12, 51, 91}) == pytest.approx(1 / 3)
    assert recall([], set()) == 1.0


# -- the emulated kernel --------------------------------------------------------------------------


def board(tmp_path: Path, model_ms: float = 2.0) -> tuple[SimBoard, Path]:
    root = materialize("rk3588", tmp_path / "sys")
    return SimBoard(Sysfs(root), WatchIO(), board_power("rk3588", energy_model("rk3588")),
                    model_ms), root


def test_governors_pick_frequencies_from_the_knobs(tmp_path: Path) -> None:
    sim, root = board(tmp_path)
    for i in range(5):  # light work under schedutil: the lowest OPP
        sim.step(i, i / 15, 1 / 15, True, True, False)
    assert [c.khz for c in sim.cpus] == [408000, 408000, 408000]
    (root / f"{CPU}/policy4/scaling_governor").write_text("performance\n")
    (root / f"{CPU}/policy4/scaling_max_freq").write_text("2016000\n")
    sim.watch.dirty = True
    sim.step(5, 5 / 15, 1 / 15, True, True, False)
    assert sim.cpus[1].khz == 2016000  # performance runs at the ceiling
    assert sim.npu is not None and sim.npu.hz == 300_000_000  # rknpu_ondemand, no load


def test_npu_runtime_pm_auto_suspends_after_the_delay(tmp_path: Path) -> None:
    sim, root = board(tmp_path, model_ms=10.0)
    (root / f"{NPU_DEV}/power/autosuspend_delay_ms").write_text("100\n")
    dt = 1 / 15
    sim.step(0, 0.0, dt, True, True, True)  # one inference, then nothing
    assert sim.counters.inferred == {0}
    for i in range(1, 10):
        sim.step(i, i * dt, dt, True, True, False)
    npu = board_power("rk3588", energy_model("rk3588")).npu
    assert npu is not None
    # by now the NPU has been suspended for a while: the last steps cost suspended power
    before = sim.meter.joules.npu
    sim.step(10, 10 * dt, dt, True, True, False)
    assert sim.meter.joules.npu - before == pytest.approx(npu.suspended_w * dt)


def test_a_slow_model_drops_stale_frames(tmp_path: Path) -> None:
    sim, _ = board(tmp_path, model_ms=150.0)
    for i in range(15):
        sim.step(i, i / 15, 1 / 15, True, True, True)
    c = sim.counters
    assert c.stale > 0 and len(c.inferred) + c.stale <= 15
    assert len(c.inferred) < 10


# -- the report -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def office() -> dict[str, Any]:
    return simulate("rk3588", scene_footage("office"), model_ms=1.0)


def test_report_has_the_documented_keys(office: dict[str, Any]) -> None:
    assert set(office) >= KEYS
    assert set(office["baselines"]) == {"always_on", "governor_only"}
    for baseline in office["baselines"].values():
        assert set(baseline) >= KEYS
    assert office["profile"] == "balanced" and office["model_ms"] == 1.0
    assert office["frames_total"] == 1800


def test_gating_and_the_policy_save_energy_without_missing_events(office: dict[str, Any]) -> None:
    always, stock = office["baselines"]["always_on"], office["baselines"]["governor_only"]
    assert office["event_recall"] == always["event_recall"] == stock["event_recall"] == 1.0
    assert always["frames_inferred"] == stock["frames_inferred"] == 1800
    assert office["frames_inferred"] < 0.25 * 1800
    assert office["energy_j"] <= 0.5 * stock["energy_j"]
    assert office["energy_j"] <= 0.3 * always["energy_j"]
    assert stock["energy_j"] < always["energy_j"]
    assert office["ratios"]["governor_only"] == pytest.approx(
        office["energy_j"] / stock["energy_j"], abs=1e-3)
    # the camera and the rest of the board cost the same in every run
    extra = office["board_energy_j"] - office["energy_j"]
    assert always["board_energy_j"] - always["energy_j"] == pytest.approx(extra, abs=0.01)
    assert office["mean_power_w"] == pytest.approx(office["energy_j"] / 120.0, abs=1e-3)


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_simulate_video_with_labels(tmp_path: Path) -> None:
    video = write_face_video(tmp_path / "face.avi", fps=15.0, frames=90)
    labels = tmp_path / "labels.json"
    first = video.face_frames.start
    labels.write_text(json.dumps({"fps": 15.0, "events": [[first, video.frames - 1]]}))
    res = run_cli("simulate", "--board", "rk3588", "--video", str(video.path),
                  "--labels", str(labels), "--model-ms", "3", "--profile", "performance",
                  "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["profile"] == "performance" and report["frames_total"] == 90
    assert set(report) >= KEYS and set(report["baselines"]["governor_only"]) >= KEYS
    assert report["event_recall"] == 1.0


def test_cli_simulate_text_report() -> None:
    res = run_cli("simulate", "--board", "rk3588", "--scene", "person", "--model-ms", "2")
    assert res.returncode == 0, res.stderr
    assert "always_on" in res.stdout and "governor_only" in res.stdout
    assert "x always_on" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--scene", "office", "--video", "x.avi"), "give --scene NAME, or --video"),
        ((), "give --scene NAME, or --video"),
        (("--video", "x.avi"), "--video needs --labels"),
        (("--scene", "nowhere"), "unknown scene 'nowhere'"),
        (("--scene", "office", "--profile", "turbo"), "unknown profile 'turbo'"),
    ],
)
def test_cli_simulate_usage_errors(args: tuple[str, ...], message: str) -> None:
    res = run_cli("simulate", "--board", "rk3588", "--model-ms", "1", *args)
    assert res.returncode == 2
    assert message in res.stderr


def test_cli_simulate_bad_labels(tmp_path: Path) -> None:
    video = write_face_video(tmp_path / "v.avi", frames=10)
    labels = tmp_path / "labels.json"
    labels.write_text('{"events": []}')
    res = run_cli("simulate", "--board", "rk3588", "--video", str(video.path),
                  "--labels", str(labels), "--model-ms", "1")
    assert res.returncode == 2 and "labels" in res.stderr


def test_cli_probe_on_a_fake_board(tmp_path: Path) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    text = run_cli("probe", "--sysfs-root", str(root))
    assert text.returncode == 0, text.stderr
    assert "NPU fdab0000.npu" in text.stdout and "policy4" in text.stdout
    data = json.loads(run_cli("probe", "--sysfs-root", str(root), "--json").stdout)
    assert [p["name"] for p in data["policies"]] == ["policy0", "policy4", "policy6"]
    bare = run_cli("probe", "--sysfs-root", str(materialize("bare", tmp_path / "bare")))
    assert "Nothing to steer or read here" in bare.stdout
