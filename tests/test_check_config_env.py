"""`wattgate check-config` refuses what `run` would refuse at start because of the config's
values on this machine: a model file (model.path) or labels file that is not there or
cannot be read. It said "ok", exit 0, and `run` then exited 69, which the unit's
RestartPreventExitStatus= keeps down after a restart the admin was told was safe. A
variant's file, loaded only when a profile or rule picks it, and groups that do not exist
do not stop `run`: check-config warns of them, and still "ok"."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from wattgate.cli import EXIT_UNAVAILABLE
from wattgate.drivers.inference import default_model_path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattgate.cli", *args],
                          capture_output=True, text=True, timeout=120)


def config(tmp_path: Path, text: str, daemon: str = 'admin_group = "root"\n') -> Path:
    """A config file of text (and daemon, lines of [daemon]), with a daemon that would
    touch nothing outside tmp_path. The default admin_group, wattgate-admin, is made by
    the package: a machine without it has a line about it."""
    path = tmp_path / "config.toml"
    path.write_text(f'[daemon]\nsocket = "{tmp_path}/s.sock"\nstate_dir = "{tmp_path}/state"\n'
                    f'{daemon}'
                    f'[power]\nenabled = false\njournal_dir = "{tmp_path}/journal"\n'
                    f'[camera]\nsource = "{tmp_path}/none.mp4"\n{text}')
    return path


def test_a_model_file_that_is_not_there_is_exit_69_as_run_exits(tmp_path: Path) -> None:
    path = config(tmp_path, f'[model]\npath = "{tmp_path}/none.tflite"\n')
    run = cli("run", "--config", str(path))
    assert run.returncode == EXIT_UNAVAILABLE, run.stderr
    assert f"model file {tmp_path}/none.tflite: not found" in run.stderr
    checked = cli("check-config", str(path))
    assert checked.returncode == EXIT_UNAVAILABLE and checked.stdout == "", checked.stderr
    assert checked.stderr == (f"wattgate: {path}: `run` would not start on this machine:\n"
                              f"  model.path: model file {tmp_path}/none.tflite: not found\n")


def test_every_variant_and_labels_file_is_checked_each_under_its_key(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    path = config(tmp_path, f'[model]\nlabels = "{tmp_path}/none.txt"\n'
                            f'[model.variants.small]\npath = "{tmp_path}/models"\n'
                            f'[model.variants.tiny]\npath = "{default_model_path()}"\n')
    checked = cli("check-config", str(path))
    assert checked.returncode == EXIT_UNAVAILABLE, checked.stderr
    # a variant is loaded only when a profile or rule picks it: `run` starts without it,
    # so its file is a warning, the main model's labels a refusal
    assert checked.stderr.splitlines() == [
        f"wattgate: {path}: warning:",
        f"  model.variants.small.path: model file {tmp_path}/models: a directory, not a "
        ".tflite file; loaded only when a profile or rule picks it: `run` then refuses to "
        "start on it (69), a switch to it keeps the model running",
        f"wattgate: {path}: `run` would not start on this machine:",
        f"  model.labels: labels file {tmp_path}/none.txt: cannot read it (No such file or "
        "directory)",
    ]


def test_a_model_that_is_no_tflite_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.tflite").write_bytes(b"not a model at all")
    checked = cli("check-config", str(config(tmp_path, '[model]\npath = "m.tflite"\n')))
    assert checked.returncode == EXIT_UNAVAILABLE, checked.stderr
    assert "  model.path: model file " in checked.stderr and "TFL3" in checked.stderr


def test_groups_that_do_not_exist_are_named_and_the_config_still_ok(tmp_path: Path) -> None:
    """`run` starts: the socket keeps the daemon's group, and only root is admin."""
    path = config(tmp_path, "", 'socket_group = "no-such-group"\nadmin_group = "no-such-2"\n')
    checked = cli("check-config", str(path))
    assert checked.returncode == 0 and checked.stdout == f"{path}: ok\n", checked.stderr
    assert "  daemon.socket_group: no group 'no-such-group' on this machine" in checked.stderr
    assert "  daemon.admin_group: no group 'no-such-2' on this machine" in checked.stderr


def test_a_config_run_would_start_with_is_ok_and_quiet(tmp_path: Path) -> None:
    model = tmp_path / "copy.tflite"
    shutil.copyfile(default_model_path(), model)
    path = config(tmp_path, f'[model]\npath = "{model}"\n')
    checked = cli("check-config", str(path))
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, f"{path}: ok\n", "")
