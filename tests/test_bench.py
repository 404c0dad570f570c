"""The benchmarks run end to end on tiny inputs and report what they document.

`--quick` shrinks every benchmark (one small resolution, two scenes, sub-second windows, a
few hundred frames) so this checks wiring and output shape: keys, types, ranges that hold
on any machine. Nothing here asserts a speed; the numbers are for `make bench`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import bench
from bench import report
from bench.common import percentile, summary
from bench.frigate import FrigateStyleDetector
from bench.peers import Downstream
from wattgate import bench as cli_bench
from wattgate.cli import main

Picture = npt.NDArray[np.uint8]

Json = dict[str, Any]


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> tuple[Json, Path]:
    out = tmp_path_factory.mktemp("results")
    return report.run_all(quick=True, out=out), out


def result(everything: tuple[Json, Path], name: str) -> Json:
    found: list[Json] = [r for r in everything[0]["results"] if r["bench"] == name]
    assert len(found) == 1, name
    return found[0]


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def check_summary(stats: Json) -> None:
    assert set(stats) == {"min", "median", "max", "n"}
    assert stats["n"] >= 1
    assert stats["min"] <= stats["median"] <= stats["max"]


# -- all ---------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_all_writes_json_and_markdown_covering_every_benchmark(
    everything: tuple[Json, Path]
) -> None:
    summary_, out = everything
    assert [r["bench"] for r in summary_["results"]] == list(bench.NAMES)
    saved = json.loads((out / "latest.json").read_text())
    assert saved["results"] == json.loads(json.dumps(summary_["results"]))
    assert saved["quick"] is True
    markdown = (out / "latest.md").read_text()
    assert "AMD" in markdown or "Machine:" in markdown
    assert "## Targets" in markdown
    for name in bench.NAMES:
        assert f"### {name}:" in markdown
    assert summary_["targets"] == sum(len(r["targets"]) for r in summary_["results"])


@pytest.mark.timeout(600)
def test_every_report_states_machine_versions_repeats_and_targets(
    everything: tuple[Json, Path]
) -> None:
    for r in everything[0]["results"]:
        machine = r["machine"]
        assert machine["cpu"] and machine["cores"] >= 1
        for key in ("numpy", "opencv", "tflite_runtime", "python", "load_average"):
            assert machine[key], key
        assert r["repeats"] >= 1
        assert r["targets"], r["bench"]
        for t in r["targets"]:
            assert t["op"] in ("<=", "<", ">=") and number(t["limit"])
            assert t["met"] in (True, False, None)
            assert t["met"] is None or number(t["value"])


@pytest.mark.timeout(600)
def test_gate_rows(everything: tuple[Json, Path]) -> None:
    r = result(everything, "gate")
    assert {row["input"] for row in r["rows"]} == {"bgr", "luma", "yuyv", "mjpeg"}
    for row in r["rows"]:
        width, height = (int(v) for v in row["resolution"].split("x"))
        assert width > 0 and height > 0
        for key in ("ours_ms", "copy_ms", "mog2_ms", "frigate_ms"):
            assert number(row[key]) and row[key] > 0, key
            check_summary(row["stats"][key[:-3]])
        assert number(row["ours_vs_copy"]) and number(row["ours_vs_mog2"])
    mjpeg = next(row for row in r["rows"] if row["input"] == "mjpeg")
    assert number(mjpeg["decode_ms"])


@pytest.mark.timeout(600)
def test_gate_quality_scenes(everything: tuple[Json, Path]) -> None:
    r = result(everything, "gate-quality")
    assert [s["scene"] for s in r["scenes"]] == ["empty", "person"]
    for scene in r["scenes"]:
        for gate in ("ours", "mog2", "frigate"):
            score = scene[gate]
            assert 0.0 <= score["recall"] <= 1.0 and 0.0 <= score["idle_skip"] <= 1.0
            assert score["recall"] <= score["recall_any_frame"] <= 1.0
            assert score["caught"] <= score["inferred_any_frame"] <= score["events"]
            assert score["events"] == scene["events"]
            assert score["skipped"] <= score["idle_frames"]
    person = r["scenes"][1]
    assert person["events"] == 2 and person["ours"]["idle_frames"] > 0


@pytest.mark.timeout(600)
def test_pipeline_keys(everything: tuple[Json, Path]) -> None:
    r = result(everything, "pipeline")
    for key in ("daemon_fps", "bare_fps", "bare_prep_fps", "model_fps"):
        assert number(r[key]) and r[key] > 0, key
    assert r["p50_added_latency_ms"] <= r["p99_added_latency_ms"]
    assert r["latency_samples"] > 0
    assert number(r["daemon_vs_bare"])
    for stats in r["stats_fps"].values():
        check_summary(stats)
    rows = r["camera_input"]["rows"]
    assert {(row["resolution"], row["layout"]) for row in rows} == {
        (size, layout) for size in ("640x480", "1280x720", "1920x1080")
        for layout in ("NV12", "YUYV", "MJPG")}
    for row in rows:
        assert number(row["colour_first_ms"]) and number(row["model_size_ms"])
        assert number(row["model_size_vs_colour_first"])


@pytest.mark.timeout(600)
def test_idle_keys(everything: tuple[Json, Path]) -> None:
    r = result(everything, "idle")
    assert number(r["cpu_cores"]) and r["cpu_cores"] >= 0
    check_summary(r["stats"])
    assert r["frames"] > 0 and r["render_ms"] > 0 and r["gate_ms"] > 0


@pytest.mark.timeout(600)
def test_footprint_keys(everything: tuple[Json, Path]) -> None:
    r = result(everything, "footprint")
    assert number(r["rss_mb"]) and r["rss_mb"] > 10
    assert number(r["rss_growth_mb"]) and number(r["rss_first_frames_mb"])
    assert number(r["ready_s"]) and r["ready_s"] > 0
    assert r["rss_after_mb"] == pytest.approx(r["rss_mb"] + r["rss_growth_mb"], abs=0.1)


@pytest.mark.timeout(600)
def test_fanout_rows(everything: tuple[Json, Path]) -> None:
    r = result(everything, "fanout")
    rows = {(row["subscribers"], row["stalled"]): row for row in r["rows"]}
    assert (0, 0) in rows and any(stalled for _, stalled in rows)
    assert rows[(0, 0)]["fps_vs_none"] == 1.0
    camera = {row["subscribers"]: row for row in r["camera_rate"]["rows"]}
    assert sorted(camera) == [0, 2]  # --quick: no subscriber and two, at the file's 30 fps
    larger = {row["subscribers"]: row for row in r["larger_model"]["rows"]}
    assert sorted(larger) == [0, 2]  # and with the larger model at its full rate
    assert r["larger_model"]["model"] == "face_detection_back.tflite"
    for subscribers, row in [*((key[0], row) for key, row in rows.items()), *camera.items(),
                             *larger.items()]:
        assert number(row["fps"]) and row["fps"] > 0
        if subscribers:
            assert row["received"] > 0
            assert row["p50_delay_ms"] <= row["p99_delay_ms"]
    for (_, stalled), row in rows.items():
        if stalled:  # judged against its plain row: difference and ratio
            assert number(row["p99_delay_vs_plain_ms"]) and number(row["p99_delay_vs_plain"])
    assert any("stalled - plain" in t["name"] for t in r["targets"])


# -- the command ---------------------------------------------------------------------------


def test_bench_command_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "gate", "--quick", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out)["bench"] == "gate"


def test_bench_command_knows_every_benchmark() -> None:
    assert cli_bench.NAMES == bench.NAMES == tuple(report.MODULES)
    with pytest.raises(SystemExit):
        main(["bench", "nonsense"])


# -- the pieces ----------------------------------------------------------------------------


def textured(seed: int = 0) -> Picture:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(60, 180, (12, 16, 3)).astype(np.float32)
    return cv2.resize(coarse, (320, 240), interpolation=cv2.INTER_NEAREST).astype(np.uint8)


def noisy(base: Picture, seed: int) -> Picture:
    noise = np.random.default_rng(seed).normal(0, 2, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def test_frigate_style_detector_boxes_a_moving_square_and_recalibrates_on_lighting() -> None:
    detector = FrigateStyleDetector()
    base = textured()
    for i in range(20):
        assert detector.detect_bgr(noisy(base, i)) == []
    moved = noisy(base, 99)
    moved[100:140, 150:190] = 255
    boxes = detector.detect_bgr(moved)
    assert len(boxes) == 1
    x0, y0, x1, y1 = boxes[0]
    assert x0 <= 150 and y0 <= 100 and x1 >= 189 and y1 >= 139
    assert detector.detect_bgr(np.full_like(base, 250)) == []  # whole frame: lighting
    assert detector.calibrating


def test_frigate_style_detector_takes_a_strided_luma_plane() -> None:
    yuyv = cv2.cvtColor(textured(), cv2.COLOR_BGR2YUV_YUY2)
    detector = FrigateStyleDetector()
    assert detector.detect_luma(yuyv[..., 0]) == []
    assert detector.detect_luma(yuyv[..., 0]) == []


def test_downstream_rule_warms_up_cools_down_and_beats() -> None:
    rule = Downstream(cooldown_s=1.0, heartbeat_s=5.0, warmup_s=2.0)
    fps = 4
    verdicts = [rule.decide(i / fps, motion=(i == 12)) for i in range(60)]
    assert all(v.reason == "calibrating" and not v.infer for v in verdicts[:8])
    assert verdicts[12].reason == "motion" and verdicts[12].motion
    assert [v.reason for v in verdicts[13:17]] == ["cooldown"] * 4
    assert verdicts[17].reason == "idle"
    beats = [i for i, v in enumerate(verdicts) if v.reason == "heartbeat"]
    assert beats == [16 + 20, 16 + 40]  # heartbeat_s after the last inference


def test_statistics() -> None:
    assert summary([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0, "n": 3}
    assert summary([])["median"] is None
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 99) is None
