"""Relative paths in config.toml: taken from the directory of the file that sets them.

Resolved against the working directory, one config meant other files under systemd
(cwd /) than from a shell, and `status --config` looked for another socket than the
daemon's. Real files in tmp_path, the working directory somewhere else.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.common import connect_when_ready
from tests.conftest import FaceVideo, toml_value
from wattgate import cli
from wattgate.config import Config, ConfigError, _camera_file, load_config
from wattgate.drivers.camera import source_kind
from wattgate.drivers.inference import default_model_path

REPO = Path(__file__).resolve().parents[1]


def write_toml(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    """tables as TOML: {"model.variants.lite": {"path": ...}} is [model.variants.lite]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory: beside the config's, not it."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_relative_paths_are_taken_from_the_config_files_directory(
    tmp_path: Path, elsewhere: Path
) -> None:
    etc = tmp_path / "etc"
    config = write_toml(etc / "config.toml", {
        "daemon": {"socket": "run/w.sock", "state_dir": "./state"},
        "camera": {"source": "clips/door.mp4"},
        "model": {"path": "models/det.tflite", "labels": "models/labels.txt",
                  "delegate": "lib/libvx_delegate.so"},
        "model.variants.lite": {"path": "models/lite.tflite", "labels": "../shared/l.txt"},
        "power": {"sysfs_root": "fake/sys", "journal_dir": "journal"},
    })
    cfg = load_config(config)
    assert cfg.daemon.socket == str(etc / "run/w.sock")
    assert cfg.daemon.state_dir == str(etc / "state")
    assert cfg.camera.source == str(etc / "clips/door.mp4")
    assert cfg.model.path == str(etc / "models/det.tflite")
    assert cfg.model.labels == str(etc / "models/labels.txt")
    assert cfg.model.delegate == str(etc / "lib/libvx_delegate.so")  # a "/": a path
    assert cfg.model.variants["lite"].path == str(etc / "models/lite.tflite")
    assert cfg.model.variants["lite"].labels == str(etc) + "/../shared/l.txt"
    assert cfg.power.sysfs_root == str(etc / "fake/sys")
    assert cfg.power.journal_dir == str(etc / "journal")
    # the same from another working directory, and with --config given relative to it
    os.chdir(tmp_path)
    assert load_config(Path("etc/config.toml")) == cfg
    os.chdir(etc)
    assert load_config(Path("config.toml")) == cfg


def test_a_relative_path_set_by_a_dropin_is_taken_from_config_d(
    tmp_path: Path, elsewhere: Path
) -> None:
    etc = tmp_path / "etc"
    config = write_toml(etc / "config.toml", {
        "daemon": {"socket": "w.sock", "state_dir": "state"},
        "model.variants.lite": {"path": "lite.tflite"},
    })
    write_toml(etc / "config.d" / "10-local.toml", {
        "daemon": {"state_dir": "state"},
        "camera": {"source": "door.mp4"},
        "model": {"labels": "labels.txt"},
        "model.variants.lite": {"labels": "lite.txt"},  # path stays the main file's
    })
    cfg = load_config(config)
    assert cfg.daemon.socket == str(etc / "w.sock")
    assert cfg.daemon.state_dir == str(etc / "config.d/state")
    assert cfg.camera.source == str(etc / "config.d/door.mp4")
    assert cfg.model.labels == str(etc / "config.d/labels.txt")
    assert cfg.model.variants["lite"].path == str(etc / "lite.tflite")
    assert cfg.model.variants["lite"].labels == str(etc / "config.d/lite.txt")


def test_names_keywords_and_absolute_paths_are_left_alone(
    tmp_path: Path, elsewhere: Path
) -> None:
    values: dict[str, dict[str, Any]] = {
        "daemon": {"socket": "/run/x/w.sock", "state_dir": "/var/lib/x",
                   "socket_group": "video", "admin_group": "wheel"},
        "camera": {"source": "synthetic:office"},
        "model": {"path": "/usr/share/m.tflite", "delegate": "libedgetpu.so.1"},
        "sensors": {"light": "auto", "pir": "class/gpio/gpio17/value"},  # under sysfs_root
        "power": {"sysfs_root": "/sys", "journal_dir": "/run/x", "npu": "fdab0000.npu",
                  "gpu": "devices/platform/fb000000.gpu", "board": "rk3588",
                  "runtime_pm_devices": ["devices/pci0000:00/0000:00:0b.0"]},
    }
    cfg = load_config(write_toml(tmp_path / "etc" / "config.toml", values))
    for table, keys in values.items():
        for key, value in keys.items():
            assert getattr(getattr(cfg, table), key) == value, f"{table}.{key}"


@pytest.mark.parametrize("source", [
    "synthetic:office", "auto", "0", "/dev/video0", "/dev/v4l/by-id/usb-cam-video-index0",
    "udev:ID_SERIAL=Vendor_Cam_123", "rtsp://10.0.0.2/stream", "http://cam/mjpg",
    "videotestsrc ! videoconvert ! appsink", "/srv/clips/door.mp4",
])
def test_camera_sources_that_are_no_relative_file_are_left_alone(
    tmp_path: Path, elsewhere: Path, source: str
) -> None:
    config = write_toml(tmp_path / "etc" / "config.toml", {"camera": {"source": source}})
    assert load_config(config).camera.source == source


@pytest.mark.parametrize("spec", [
    "synthetic:office", "auto", "0", "12", "²", "/dev/video0", "udev:ID_SERIAL=x",
    "rtsp://h/s", "a ! appsink", "door.mp4", "clips/door.mp4", "/srv/door.mp4",
    "pipe:0", " clips/door.mp4 ",
])
def test_the_file_form_of_camera_source_is_the_one_the_camera_opens_as_a_file(
    tmp_path: Path, elsewhere: Path, spec: str
) -> None:
    """What the config makes absolute is what the camera opens as a file: both read the
    forms through config.source_form. A path that is not there is a file to source_kind;
    a FIFO that is there a stream, a path all the same."""
    kind = source_kind(spec)
    file_form = kind == "file" or (kind == "stream" and "://" not in spec)
    assert (_camera_file(spec) is not None) == file_form


def test_home_is_not_expanded(tmp_path: Path, elsewhere: Path) -> None:
    """Nothing expands "~" (the daemon has no home of a user): a relative path like any."""
    etc = tmp_path / "etc"
    cfg = load_config(write_toml(etc / "config.toml", {"model": {"path": "~/det.tflite"}}))
    assert cfg.model.path == str(etc / "~/det.tflite")


def test_the_built_in_defaults_are_unchanged() -> None:
    assert load_config(None) == Config()
    assert Config().daemon.socket == "/run/wattgate/wattgate.sock"
    assert Config().power.sysfs_root == "/sys"


def test_errors_still_name_the_key_and_the_dropin(tmp_path: Path, elsewhere: Path) -> None:
    """A blank or mistyped value is reported as written, naming the drop-in that set it."""
    etc = tmp_path / "etc"
    config = write_toml(etc / "config.toml", {"model": {"path": 3}})
    dropin = write_toml(etc / "config.d" / "50-x.toml", {"daemon": {"state_dir": " "}})
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.source == str(config)
    assert info.value.problems == [
        "daemon.state_dir: got ' '; must not be blank (leave the key out for its default) "
        f"(set in {dropin})",
        "model.path: got 3; Input should be a valid string",
    ]


def test_a_relative_socket_must_fit_sun_path_once_absolute(
    tmp_path: Path, elsewhere: Path
) -> None:
    """The daemon binds the absolute path: 107 bytes is its limit, not the value's own."""
    etc = tmp_path / "etc"
    config = write_toml(etc / "config.toml", {})
    name = "s" * (107 - len(str(etc / "config.d")))  # "/" + name: 108 bytes
    dropin = write_toml(etc / "config.d" / "50-x.toml", {"daemon": {"socket": name}})
    long = str(etc / "config.d" / name)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.problems == [
        f"daemon.socket: got {long!r}; 108 bytes long; a Unix socket path has at most 107 "
        f"(set in {dropin})"
    ]
    write_toml(dropin, {"daemon": {"socket": name[1:]}})
    assert load_config(config).daemon.socket == long[:-1]


def test_a_client_finds_the_socket_the_config_names_from_any_directory(
    tmp_path: Path, elsewhere: Path
) -> None:
    etc = tmp_path / "etc"
    write_toml(etc / "config.toml", {"daemon": {"socket": "run/w.sock"}})
    args = argparse.Namespace(socket=None, config="../etc/config.toml")
    assert cli._socket_path(args) == str(etc / "run/w.sock")
    res = subprocess.run(
        [sys.executable, "-m", "wattgate.cli", "status", "--config", "../etc/config.toml"],
        capture_output=True, text=True, timeout=60, cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert res.returncode != 0
    assert f"cannot connect to {etc / 'run/w.sock'}: " in res.stderr, res.stderr


def test_the_daemon_under_cwd_root_and_a_client_elsewhere_agree(
    tmp_path: Path, face_video: FaceVideo
) -> None:
    """As systemd starts it: working directory /, --config absolute. Every path in the
    config relative; a client in another directory with --config relative to its own."""
    etc = tmp_path / "etc"
    (etc / "run").mkdir(parents=True)
    (etc / "sys").mkdir()  # no knobs: power control stays off, this machine's /sys untouched
    (etc / "clips").mkdir()
    (etc / "models").mkdir()
    shutil.copy(face_video.path, etc / "clips" / "door.avi")
    shutil.copy(default_model_path(), etc / "models" / "face.tflite")
    config = write_toml(etc / "config.toml", {
        "daemon": {"socket": "run/w.sock"},
        "camera": {"source": "clips/door.avi", "realtime": False, "loop": True},
        "gate": {"enabled": False},
        "model": {"path": "models/face.tflite"},
        "power": {"sysfs_root": "sys", "journal_dir": "journal"},
    })
    write_toml(etc / "config.d" / "10-state.toml", {"daemon": {"state_dir": "state"}})
    client_dir = tmp_path / "home"
    client_dir.mkdir()
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wattgate.cli", "run", "--config", str(config)],
            cwd="/", stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
        )
    try:
        client = connect_when_ready(proc, etc / "run/w.sock", log_path.read_text, 60)
        with client:
            assert client.request("reload")["message"] == "reloaded"  # nothing moved
        res = subprocess.run(
            [sys.executable, "-m", "wattgate.cli", "status", "--json",
             "--config", "../etc/config.toml"],
            capture_output=True, text=True, timeout=60, cwd=client_dir,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert res.returncode == 0, res.stderr + log_path.read_text()
        status = json.loads(res.stdout)
        assert status["model"]["path"] == str(etc / "models/face.tflite")
        assert status["source"]["source"] == str(etc / "clips/door.avi")
        assert (etc / "config.d" / "state" / "events.db").exists()
        assert not Path("/run/w.sock").exists() and not Path("/state").exists()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log_path.read_text()
