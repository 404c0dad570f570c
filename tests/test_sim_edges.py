"""The simulated board and the tools around it, held to what they promise.

`make demo` (wattgate/demo.py) runs as a real process in a temporary working directory,
with its real daemon child; nothing here asserts how long anything takes.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess

# -- make demo ----------------------------------------------------------------------------


class DemoRun:
    """`python -m wattgate.demo` in its own directory, its output read line by line."""

    def __init__(self, cwd: Path, seconds: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wattgate.demo", "--seconds", str(seconds)],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.output = b""

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        """Read until ``text`` has been printed; AssertionError with the output if not."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                raise AssertionError(f"no {text!r}; output:\n{self.output.decode()}")
            self.output += chunk

    def daemon_pid(self) -> int:
        """The demo's one child: the daemon."""
        pid = self.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def finish(self, timeout: float = 60.0) -> str:
        """Wait for the demo to exit; everything it (and its daemon) printed."""
        self.proc.wait(timeout)
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.output += chunk
        return self.output.decode(errors="replace")


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def demo_run(cwd: Path, seconds: float = 120.0) -> Iterator[DemoRun]:
    run = DemoRun(cwd, seconds)
    daemons: list[int] = []
    try:
        run.wait_for("demo: connected")
        daemons.append(run.daemon_pid())
        yield run
    finally:
        for pid in daemons:  # never leave a daemon behind, even when the test fails
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if run.proc.poll() is None:
            run.proc.kill()
        run.proc.wait()
        if run.proc.stdout is not None:
            run.proc.stdout.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_demo_stopped_by_a_signal_stops_its_daemon_and_restores_the_board(
    tmp_path: Path, signum: signal.Signals
) -> None:
    with demo_run(tmp_path) as run:
        daemon = run.daemon_pid()
        run.proc.send_signal(signum)
        output = run.finish()
        assert not alive(daemon), f"the daemon was left running:\n{output}"
        assert run.proc.returncode == 128 + signum, output
        assert "Traceback" not in output, output
        assert f"demo: stopped by {signum.name}" in output
        assert "restored" in output  # the daemon stopped the clean way, board restored


def test_a_second_demo_beside_a_running_one_refuses_and_leaves_it_alone(tmp_path: Path) -> None:
    with demo_run(tmp_path) as first:
        daemon = first.daemon_pid()
        knob = tmp_path / "run/board/devices/system/cpu/cpufreq/policy0/scaling_max_freq"
        written = knob.read_text()
        second = subprocess.run([sys.executable, "-m", "wattgate.demo", "--seconds", "1"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1, second.stdout + second.stderr
        assert "already serves" in second.stderr and "wattgate.sock" in second.stderr
        assert "connected" not in second.stdout  # it never showed the other daemon's results
        assert alive(daemon)
        assert knob.read_text() == written  # the running daemon's board was not rewritten
        first.proc.send_signal(signal.SIGTERM)
        first.finish()


def test_a_stale_socket_from_a_killed_demo_does_not_stop_the_next(tmp_path: Path) -> None:
    import socket

    (tmp_path / "run").mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "run/wattgate.sock"))
    stale.close()  # bound, never listening: what a SIGKILLed daemon leaves
    res = subprocess.run([sys.executable, "-m", "wattgate.demo", "--seconds", "0.5"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "--- summary ---" in res.stdout


# -- bench/report.py ------------------------------------------------------------------------


def pipeline_result(**changes: Any) -> dict[str, Any]:
    """A pipeline result as bench/pipeline.py makes it, as small as the report allows."""
    one = {"min": 1.0, "median": 1.0, "max": 1.0, "n": 1}
    result: dict[str, Any] = {
        "bench": "pipeline", "source": "office 320x240 I420 AVI", "model": "m.tflite",
        "threads": 1, "repeats": 1, "targets": [],
        "stats_fps": {key: one for key in ("bare", "bare_prep", "model", "daemon")},
        "cpu_ms_per_frame": {key: one for key in ("bare", "bare_prep", "model", "daemon")},
        "thread_cpu_ms": {"daemon": {"infer": one, "capture": one, "loop": one}},
        "daemon_vs_bare": 1.0, "cpu_bound_ratio": 1.0, "model_vs_bare": 1.0,
        "daemon_vs_model": 1.0, "latency_samples": 0,
        **{f"p{q}_{name}": None for q in (50, 99) for name in (
            "added_latency_ms", "daemon_added_ms", "added_latency_ms_saturated")},
    }
    result.update(changes)
    return result


def test_pipeline_report_without_a_daemon_series_says_so() -> None:
    """bench/pipeline.py leaves a series out of stats_fps and cpu_ms_per_frame when it has
    no sample (a daemon window with fewer than two results); the Markdown raised KeyError,
    after a run of minutes."""
    from bench import report

    result = pipeline_result()
    for key in ("stats_fps", "cpu_ms_per_frame"):
        del result[key]["daemon"]
    result["daemon_vs_bare"] = result["daemon_vs_model"] = None
    lines = report.pipeline_md(result)
    row = next(line for line in lines if line.startswith("| daemon, realtime = false"))
    assert row == "| daemon, realtime = false | – | – |"


def test_run_all_replaces_neither_file_when_the_markdown_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """latest.json and latest.md describe the same run: a run whose Markdown cannot be
    made leaves the previous pair as it was (the JSON used to be replaced first)."""
    from bench import report

    (tmp_path / "latest.json").write_text("previous json\n")
    (tmp_path / "latest.md").write_text("previous md\n")

    def broken(result: dict[str, Any]) -> list[str]:
        raise KeyError("a key the renderer expected")

    monkeypatch.setattr(report, "runner", lambda name: lambda **kw: pipeline_result())
    monkeypatch.setitem(report.SECTIONS, "pipeline", broken)
    with pytest.raises(KeyError):
        report.run_all(quick=True, out=tmp_path, names=["pipeline"])
    assert (tmp_path / "latest.json").read_text() == "previous json\n"
    assert (tmp_path / "latest.md").read_text() == "previous md\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "latest.md"]


# -- wattgate bench -------------------------------------------------------------------------


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """bench.report's runner replaced by one that returns a pipeline result at once; the
    keyword arguments of each call are recorded."""
    from bench import report
    from bench.common import machine

    calls: list[dict[str, Any]] = []

    def run(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return pipeline_result(machine=machine())

    monkeypatch.setattr(report, "runner", lambda name: run)
    return calls


def test_bench_one_shows_progress_on_stderr(
    fake_pipeline: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A benchmark runs for minutes; `wattgate bench NAME` said nothing until the end."""
    from wattgate.cli import main

    assert main(["bench", "pipeline", "--json"]) == 0
    captured = capsys.readouterr()
    assert "bench: pipeline ..." in captured.err and "bench: pipeline done" in captured.err
    assert captured.out.count("\n") == 1  # stdout is still the one JSON object
    assert fake_pipeline == [{"quick": False, "repeats": None}]


def test_bench_one_refuses_out_which_only_all_writes(
    fake_pipeline: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out names where `all` writes latest.json and latest.md; given to one benchmark it
    was dropped without a word, and nothing was written where it pointed. It is a usage
    error: exit 2, as argparse gives for the others."""
    from wattgate.cli import main

    assert main(["bench", "pipeline", "--out", str(tmp_path / "results")]) == 2
    assert "--out" in capsys.readouterr().err
    assert fake_pipeline == []  # refused before minutes of measuring


# -- wattgate simulate ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ('{"fps": NaN, "events": []}', "fps"),  # Python's json reads NaN and Infinity
        ('{"fps": Infinity, "events": []}', "fps"),
        ('{"fps": 15, "events": [[40, 30]]}', "[40, 30]"),
        ('{"fps": 15, "events": [[-5, 3]]}', "[-5, 3]"),
    ],
)
def test_simulate_rejects_labels_it_cannot_score(
    tmp_path: Path, labels: str, message: str
) -> None:
    """A NaN fps gave a report of NaN seconds (not JSON); an event that ends before it
    starts, or starts before frame 0, was counted as missed by every strategy alike."""
    from wattgate.simulate import SimulateError, video_footage

    path = tmp_path / "labels.json"
    path.write_text(labels)
    with pytest.raises(SimulateError, match=re.escape(message)):
        video_footage(tmp_path / "unread.avi", path)


def test_simulate_a_recording_cut_short_compares_every_strategy_over_its_real_frames(
    tmp_path: Path,
) -> None:
    """An AVI whose writer lost power halfway: its header still counts every frame."""
    import cv2
    import numpy as np

    from wattgate.simulate import simulate, video_footage

    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter.fourcc(*"MJPG"), 15.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(60):
        writer.write(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    writer.release()
    cut = tmp_path / "cut.avi"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    header = cv2.VideoCapture(str(cut))
    assert int(header.get(cv2.CAP_PROP_FRAME_COUNT)) == 60  # what the header claims
    header.release()
    labels = tmp_path / "labels.json"
    labels.write_text('{"fps": 15, "events": []}')

    footage = video_footage(cut, labels)
    assert 0 < footage.length == sum(1 for _ in footage.frames()) < 60
    report = simulate("rk3588", footage, model_ms=1.0)
    totals = {report["frames_total"], *(b["frames_total"] for b in report["baselines"].values())}
    assert totals == {footage.length}
    assert report["seconds"] == pytest.approx(footage.length / 15.0, abs=1e-3)


# -- the emulated kernel (simkernel) --------------------------------------------------------


def sim_board(tmp_path: Path, name: str = "rk3588", model_ms: float = 2.0) -> tuple[Any, Path]:
    from wattgate.boards import energy_model, materialize
    from wattgate.drivers.sysfs import Sysfs
    from wattgate.policies.energy import board_power
    from wattgate.simkernel import SimBoard, WatchIO

    root = materialize(name, tmp_path / "sys")
    watch = WatchIO()
    model = board_power(name, energy_model(name))
    return SimBoard(Sysfs(root, watch), watch, model, model_ms), root


def test_an_npu_suspended_at_start_costs_suspended_power_until_a_job(tmp_path: Path) -> None:
    """The RK3588 tree starts with the NPU runtime-suspended under control=auto; the board
    counted it powered (idle) for one autosuspend delay, as if it had just been 'on'."""
    sim, _ = sim_board(tmp_path)
    npu = sim.model.npu
    dt = 1 / 15
    for i in range(15):
        sim.step(i, i * dt, dt, True, True, False)
    assert sim.meter.joules.npu == pytest.approx(npu.suspended_w * 15 * dt)
    sim.step(15, 15 * dt, dt, True, True, True)  # the first job resumes it
    assert sim.meter.joules.npu > npu.suspended_w * 16 * dt


def test_a_negative_autosuspend_delay_keeps_the_npu_powered(tmp_path: Path) -> None:
    """A negative delay prevents runtime suspend, like control=on (sysfs-devices-power);
    the board suspended the NPU at once instead, the opposite."""
    sim, root = sim_board(tmp_path, model_ms=10.0)
    (root / "devices/platform/fdab0000.npu/power/autosuspend_delay_ms").write_text("-1\n")
    dt = 1 / 15
    sim.step(0, 0.0, dt, True, True, True)
    for i in range(1, 20):
        sim.step(i, i * dt, dt, True, True, False)
    before = sim.meter.joules.npu
    sim.step(20, 20 * dt, dt, True, True, False)
    npu = sim.model.npu
    assert sim.meter.joules.npu - before == pytest.approx(npu.powered_w(sim.npu.hz) * dt)


CPUFREQ = "devices/system/cpu/cpufreq"


@pytest.mark.parametrize(
    ("board", "attribute", "value", "error"),
    [
        ("rk3588", f"{CPUFREQ}/policy0/scaling_governor", "turbo", "AttributeInvalid"),
        ("intel-mtl", f"{CPUFREQ}/policy0/scaling_governor", "schedutil", "AttributeInvalid"),
        ("rk3588", f"{CPUFREQ}/policy4/scaling_max_freq", "fast", "AttributeInvalid"),
        ("rk3588", f"{CPUFREQ}/policy4/scaling_min_freq", "-408000", "AttributeInvalid"),
        ("rk3588", "class/devfreq/fdab0000.npu/governor", "ondemand", "AttributeInvalid"),
        ("rk3588", "class/devfreq/fdab0000.npu/max_freq", "1GHz", "AttributeInvalid"),
        ("rk3588", "devices/platform/fdab0000.npu/power/control", "off", "AttributeInvalid"),
        ("rk3588", "devices/platform/fdab0000.npu/power/autosuspend_delay_ms", "0.5",
         "AttributeInvalid"),
        ("intel-mtl", f"{CPUFREQ}/policy0/energy_performance_preference", "eco",
         "AttributeInvalid"),
    ],
)
def test_the_simulated_kernel_refuses_what_the_kernel_refuses(
    tmp_path: Path, board: str, attribute: str, value: str, error: str
) -> None:
    """`simulate` writes its board through WatchIO: a plain file took any value, so a
    policy writing one the kernel answers EINVAL to went unnoticed and was simulated as if
    it had worked (an unknown governor ran as ondemand)."""
    from wattgate.boards import materialize
    from wattgate.drivers.sysfs import Sysfs
    from wattgate.simkernel import WatchIO

    fs = Sysfs(materialize(board, tmp_path / "sys"), WatchIO())
    before = fs.read(attribute)
    with pytest.raises(Exception) as caught:
        fs.write(attribute, value)
    assert type(caught.value).__name__ == error
    assert fs.read(attribute) == before


def test_intel_pstate_refuses_an_epp_but_performance_under_the_performance_governor(
    tmp_path: Path,
) -> None:
    from wattgate.boards import materialize
    from wattgate.drivers.sysfs import AttributeBusy, Sysfs
    from wattgate.simkernel import WatchIO

    fs = Sysfs(materialize("intel-mtl", tmp_path / "sys"), WatchIO())
    epp = f"{CPUFREQ}/policy0/energy_performance_preference"
    assert fs.write(epp, "power")  # under powersave: any listed preference
    assert fs.write(f"{CPUFREQ}/policy0/scaling_governor", "performance")
    with pytest.raises(AttributeBusy):
        fs.write(epp, "balance_power")
    assert fs.write(epp, "performance")


@pytest.mark.parametrize(
    ("board", "attribute", "value"),
    [
        ("rk3588", f"{CPUFREQ}/policy4/scaling_governor", "performance"),
        ("rk3588", f"{CPUFREQ}/policy4/scaling_max_freq", "1200000"),
        ("rk3588", "class/devfreq/fdab0000.npu/governor", "userspace"),
        ("rk3588", "class/devfreq/fdab0000.npu/min_freq", "300000000"),
        ("rk3588", "devices/platform/fdab0000.npu/power/control", "on"),
        ("rk3588", "devices/platform/fdab0000.npu/power/autosuspend_delay_ms", "-1"),
        ("intel-mtl", f"{CPUFREQ}/policy0/energy_performance_preference", "power"),
        ("imx8mp", "bus/platform/drivers/galcore/gpu_govern", "nominal"),
    ],
)
def test_the_simulated_kernel_takes_what_the_kernel_takes(
    tmp_path: Path, board: str, attribute: str, value: str
) -> None:
    from wattgate.boards import materialize
    from wattgate.drivers.sysfs import Sysfs
    from wattgate.simkernel import WatchIO

    watch = WatchIO()
    fs = Sysfs(materialize(board, tmp_path / "sys"), watch)
    watch.dirty = False
    fs.write_raw(attribute, value + "\n")
    assert watch.dirty


def test_demo_refuses_a_socket_whose_daemon_is_too_busy_to_say_hello(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """A daemon at its max_clients answers `error busy` instead of hello: it is serving,
    and a demo that took busy for "nobody there" rewrote the board tree under it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    daemon = start_daemon(daemon={"socket": str(run_dir / "wattgate.sock"), "max_clients": 1})
    with daemon.connect():  # the one client it takes
        demo = subprocess.run([sys.executable, "-m", "wattgate.demo", "--seconds", "5"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert demo.returncode != 0, demo.stdout + demo.stderr
        assert "already serves" in demo.stderr, demo.stdout + demo.stderr
        assert not (run_dir / "board").exists()  # the board tree was never made
    assert daemon.proc.poll() is None
