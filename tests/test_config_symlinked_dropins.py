"""A config file that is a symbolic link is read where it is named, not at its target.

A site's file kept elsewhere and linked in (config.d/10-site.toml -> /opt/site/wattgate.toml)
takes its relative paths from config.d, where the link is, as systemd takes its drop-ins
where they are named, and an error names the link, not its target: one rule for every key
that names a file and for the file errors name. Real symlinks in tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wattgate import cli
from wattgate.config import EXIT_CONFIG, load_config


def _site(tmp_path: Path, text: str) -> Path:
    """/etc/wattgate/config.toml, with its config.d/10-site.toml a link to
    /opt/site/wattgate.toml holding text; both under tmp_path. Returns the main file."""
    etc, site = tmp_path / "etc" / "wattgate", tmp_path / "opt" / "site"
    (etc / "config.d").mkdir(parents=True)
    site.mkdir(parents=True)
    (etc / "config.toml").write_text("")
    (site / "wattgate.toml").write_text(text)
    (etc / "config.d" / "10-site.toml").symlink_to(site / "wattgate.toml")
    return etc / "config.toml"


# Every key that names a file, each set to a relative path.
RELATIVE = (
    '[daemon]\nsocket = "w.sock"\nstate_dir = "state"\n'
    '[camera]\nsource = "clip.mp4"\n'
    '[model]\npath = "m.tflite"\nlabels = "labels.txt"\ndelegate = "lib/d.so"\n'
    '[model.variants.lite]\npath = "lite.tflite"\nlabels = "lite.txt"\n'
    '[power]\nsysfs_root = "sys"\njournal_dir = "journal"\n'
)


def _paths(main: Path) -> list[str]:
    cfg = load_config(main)
    lite = cfg.model.variants["lite"]
    return [cfg.daemon.socket, cfg.daemon.state_dir, cfg.camera.source, str(cfg.model.path),
            str(cfg.model.labels), str(cfg.model.delegate), lite.path, str(lite.labels),
            cfg.power.sysfs_root, cfg.power.journal_dir]


def _expected(directory: Path) -> list[str]:
    return [str(directory / name) for name in (
        "w.sock", "state", "clip.mp4", "m.tflite", "labels.txt", "lib/d.so", "lite.tflite",
        "lite.txt", "sys", "journal")]


def test_a_linked_dropins_relative_paths_are_from_config_d(tmp_path: Path) -> None:
    main = _site(tmp_path, RELATIVE)
    assert _paths(main) == _expected(main.parent / "config.d")


def test_a_linked_main_files_paths_and_dropins_are_beside_the_link(tmp_path: Path) -> None:
    """/etc/wattgate/config.toml -> /opt/site/config.toml: its paths are from /etc/wattgate,
    and its drop-ins are /etc/wattgate/config.d's, not /opt/site/config.d's."""
    etc, site = tmp_path / "etc" / "wattgate", tmp_path / "opt" / "site"
    (etc / "config.d").mkdir(parents=True)
    (site / "config.d").mkdir(parents=True)
    (site / "config.toml").write_text(RELATIVE)
    (etc / "config.toml").symlink_to(site / "config.toml")
    (etc / "config.d" / "10-local.toml").write_text("[gate]\nthreshold = 40\n")
    (site / "config.d" / "10-site.toml").write_text("[gate]\nthreshold = 50\n")
    assert _paths(etc / "config.toml") == _expected(etc)
    assert load_config(etc / "config.toml").gate.threshold == 40


def test_check_config_names_the_link_as_the_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main = _site(tmp_path, "[gate]\nthreshold = 999\n")
    assert cli.main(["check-config", str(main)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"(set in {main.parent / 'config.d' / '10-site.toml'})" in err
    assert str(tmp_path / "opt") not in err
