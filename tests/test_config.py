"""config.toml validation: the shipped file, drop-ins, and errors that name the key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import config_with_dropin, run_as
from wattgate.config import Config, ConfigError, json_schema, load_config, parse_config
from wattgate.drivers.camera import source_kind

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "config.toml"
NOBODY = 65534  # uid and gid of nobody/nogroup on Debian


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattgate.cli", *args], capture_output=True, text=True, timeout=60
    )


def schema_keys(schema: dict[str, Any]) -> set[str]:
    """Every leaf key path the schema defines, e.g. 'gate.heartbeat_s'.

    A table of named tables (profiles, model.variants) contributes 'profiles.*.include';
    an array of tables (rules) contributes 'rules[].profile'.
    """
    defs = schema.get("$defs", {})
    keys: set[str] = set()

    def walk(node: dict[str, Any], prefix: str) -> None:
        for name, prop in node.get("properties", {}).items():
            ref = prop.get("$ref")
            named = (prop.get("additionalProperties") or {}).get("$ref")
            items = (prop.get("items") or {}).get("$ref") if prop.get("type") == "array" else None
            if ref:
                walk(defs[ref.split("/")[-1]], f"{prefix}{name}.")
            elif named:
                walk(defs[named.split("/")[-1]], f"{prefix}{name}.*.")
            elif items:
                walk(defs[items.split("/")[-1]], f"{prefix}{name}[].")
            else:
                keys.add(prefix + name)

    walk(schema, "")
    return keys


def section_pattern(section: str) -> str:
    """The header a key's table has in config.toml: [a.b], [profiles.NAME.idle], [[rules]]."""
    if section.endswith("[]"):
        return r"\[\[" + re.escape(section[:-2]) + r"\]\]"
    return r"\[" + r"\.".join(
        r"[\w-]+" if part == "*" else re.escape(part) for part in section.split(".")
    ) + r"\]"


def test_shipped_config_is_valid_and_equals_the_defaults() -> None:
    assert load_config(SHIPPED) == Config()


def test_shipped_config_documents_every_key() -> None:
    text = SHIPPED.read_text()
    for key in schema_keys(json_schema()):
        section, _, name = key.rpartition(".")
        assert re.search(section_pattern(section), text), f"[{section}] missing from config.toml"
        assert re.search(rf"^#? ?{re.escape(name)} = ", text, re.M), f"{key} not in config.toml"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"gate": {"heartbeat_s": -1}}, "gate.heartbeat_s: got -1; Input should be greater than 0"),
        ({"gate": {"heartbeat": 5}}, "gate.heartbeat: unknown key"),
        ({"camera": {"fps": "15"}}, "camera.fps: got '15'"),
        ({"daemon": {"log_level": "loud"}}, "daemon.log_level: got 'loud'"),
        ({"model": {"kind": "resnet"}}, "model.kind: got 'resnet'"),
        ({"model": {"resize": "squash"}}, "model.resize: got 'squash'"),
        ({"cameras": {}}, "cameras: unknown key"),
    ],
)
def test_errors_name_key_value_and_rule(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"gate": {"threshold": 0, "alpha": 2}, "camera": {"width": 1}})
    assert len(info.value.problems) == 3


def test_dropins_merge_in_name_order(tmp_path: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text('[camera]\nsource = "a.mp4"\nfps = 10.0\n[gate]\nthreshold = 20\n')
    dropins = tmp_path / "config.d"
    dropins.mkdir()
    (dropins / "20-late.toml").write_text("[camera]\nfps = 30.0\n")
    (dropins / "10-early.toml").write_text("[camera]\nfps = 20.0\nwidth = 1280\n")
    (dropins / "ignored.txt").write_text("[camera]\nfps = 1.0\n")
    cfg = load_config(main)
    # a relative path is taken from the directory of the file that set it
    assert cfg.camera.source == str(tmp_path / "a.mp4")
    assert (cfg.camera.fps, cfg.camera.width) == (30.0, 1280)
    assert cfg.gate.threshold == 20


def test_bad_dropin_is_named(tmp_path: Path) -> None:
    main, bad = config_with_dropin(tmp_path, "", "[camera\n", "50-bad.toml")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert info.value.source == str(bad)


def test_check_config_cli(tmp_path: Path) -> None:
    ok = run_cli("check-config", str(SHIPPED))
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[gate]\nheartbeat_s = 0\n")
    res = run_cli("check-config", str(bad))
    assert res.returncode == 78
    assert "gate.heartbeat_s: got 0" in res.stderr
    missing = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 78
    assert "file not found" in missing.stderr


def test_run_with_bad_config_exits_78_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[daemon]\nsocket = "x"\nbogus = 1\n')
    res = run_cli("run", "--config", str(bad))
    assert res.returncode == 78
    assert "daemon.bogus: unknown key" in res.stderr
    assert not (tmp_path / "x").exists()


def test_schema_cli_prints_json_schema() -> None:
    res = run_cli("config", "schema")
    assert res.returncode == 0
    schema = json.loads(res.stdout)
    assert "gate.heartbeat_s" in schema_keys(schema)


# -- files that cannot be read as TOML, values that cannot be used ----------------------------


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[camera]\nsource = "/srv/cam\xe9ra.mp4"\n')
    with pytest.raises(ConfigError) as info:
        load_config(latin1)
    assert info.value.source == str(latin1)
    assert info.value.problems == ["not UTF-8 (TOML files are): byte 0xe9 on line 2"]
    res = run_cli("check-config", str(latin1))
    assert res.returncode == 78, res.stderr
    assert "Traceback" not in res.stderr and "not UTF-8" in res.stderr


def test_a_config_path_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    res = run_cli("check-config", str(tmp_path))
    assert res.returncode == 78, res.stderr
    assert "Traceback" not in res.stderr
    assert f"bad config {tmp_path}:\n  is a directory, not a file" in res.stderr
    res = run_cli("status", "--config", str(tmp_path))
    assert res.returncode == 78 and "is a directory" in res.stderr, res.stderr


def test_a_dropin_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text("")
    (tmp_path / "config.d").mkdir()
    bad = tmp_path / "config.d" / "50-bad.toml"
    bad.write_bytes(b"# \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert info.value.source == str(bad)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan", "1e400"])
@pytest.mark.parametrize(
    "key",
    ["camera.stall_s", "gate.heartbeat_s", "gate.cooldown_s", "rules.0.temp_above_c",
     "sensors.light_jump_ratio", "daemon.events_max_age_days", "camera.fps"],
)
def test_numbers_that_are_not_finite_are_refused(tmp_path: Path, key: str, value: str) -> None:
    """NaN passes every bound it is not compared with (the comparison is false), and an
    infinite stall_s became a timeout that stopped the capture thread with OverflowError."""
    section, name = key.rsplit(".", 1)
    header = "[[rules]]\nprofile = \"powersave\"" if section == "rules.0" else f"[{section}]"
    path = tmp_path / "c.toml"
    path.write_text(f"{header}\n{name} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any(p.startswith(f"{key}: got ") and "finite number" in p
               for p in info.value.problems), info.value.problems


def test_a_stall_timeout_longer_than_an_hour_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"camera": {"stall_s": 1e12}})
    assert info.value.problems[0].startswith("camera.stall_s: got 1000000000000.0; ")
    assert parse_config({"camera": {"stall_s": 3600.0}}).camera.stall_s == 3600.0


def test_a_socket_path_longer_than_sun_path_is_a_config_error(tmp_path: Path) -> None:
    """sun_path holds 108 bytes with the terminating NUL: a longer daemon.socket failed
    only at bind, as "cannot start: AF_UNIX path too long" with exit code 1."""
    fits = "/run/" + "é" * 49 + ".sok"  # 107 bytes: é is two in UTF-8
    assert len(fits.encode()) == 107
    assert parse_config({"daemon": {"socket": fits}}).daemon.socket == fits
    with pytest.raises(ConfigError) as info:
        parse_config({"daemon": {"socket": fits + "c"}})
    assert info.value.problems == [
        f"daemon.socket: got {fits + 'c'!r}; 108 bytes long; a Unix socket path has at most 107"
    ]
    with pytest.raises(ConfigError) as info:
        parse_config({"daemon": {"socket": ""}})
    assert info.value.problems == [f"daemon.socket: got ''; {BLANK}"]


def test_run_with_a_socket_path_too_long_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[daemon]\nsocket = "{tmp_path}/{"s" * 120}.sock"\n'
                      f'state_dir = "{tmp_path}/state"\n')
    res = run_cli("run", "--config", str(config))
    assert res.returncode == 78, res.stderr
    assert f"bad config {config}:\n  daemon.socket: got " in res.stderr
    assert not (tmp_path / "state").exists()


def test_strings_with_a_nul_character_are_refused(tmp_path: Path) -> None:
    """A NUL in a path made start-up fail with "ValueError: embedded null byte" and a
    traceback (state_dir), or report a model file named with the NUL dropped."""
    path = tmp_path / "c.toml"
    path.write_text('[daemon]\nstate_dir = "/var/lib/w\\u0000g"\n'
                    '[power]\nruntime_pm_devices = ["a", "b\\u0000"]\n'
                    '[profiles."x\\u0000"]\ncpu_governor = "schedutil"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        "daemon.state_dir: got '/var/lib/w\\x00g'; must not contain a NUL character",
        "power.runtime_pm_devices.1: got 'b\\x00'; must not contain a NUL character",
        "profiles.x\x00: a key must not contain a NUL character",
    ]
    res = run_cli("run", "--config", str(path))
    assert res.returncode == 78 and "Traceback" not in res.stderr, res.stderr


def test_a_bad_value_set_by_a_dropin_names_the_dropin(tmp_path: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text('[camera]\nfps = 10.0\nwidth = 2\n[profiles.mine]\ncpu_governor = "x"\n')
    (tmp_path / "config.d").mkdir()
    dropin = tmp_path / "config.d" / "50-site.toml"
    dropin.write_text('[camera]\nfps = "fast"\n[profiles.mine.idle]\ncpu_max_khz = "200%"\n'
                      "[gate]\nheartbeat = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert info.value.source == str(main)
    assert sorted(info.value.problems) == sorted([
        f"camera.fps: got 'fast'; Input should be a valid number (set in {dropin})",
        "camera.width: got 2; Input should be greater than or equal to 16",
        "profiles.mine.idle.cpu_max_khz: got '200%'; must be digits with an optional "
        f'fraction, then "%" ("50%", "12.5%"), 0% to 100% (set in {dropin})',
        f"gate.heartbeat: unknown key (set in {dropin})",
    ])


def test_sighup_with_a_config_that_is_not_utf8_keeps_the_old_one(
    start_daemon: Any,
) -> None:
    """The reload raised UnicodeDecodeError inside its task: nothing said it was rejected."""
    import signal
    import time

    daemon = start_daemon(gate={"heartbeat_s": 5.0})
    with daemon.connect() as client:
        daemon.config.write_bytes(daemon.config.read_bytes() + b"# caf\xe9\n")
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reload rejected" not in daemon.log():
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
        assert "not UTF-8" in daemon.log() and "Traceback" not in daemon.log()
        assert client.request("status")["class"] == "status"
    assert daemon.stop() == 0


BLANK = "must not be blank (leave the key out for its default)"
BLANK_KEYS = [
    # taken for a file named "" and waited for forever: READY, and no frame ever
    ("camera", "source"),
    # taken for "." (the current directory): "model file .: not found", or state written
    # wherever the daemon happened to start
    ("model", "path"), ("model", "labels"), ("model", "delegate"), ("daemon", "state_dir"),
    ("daemon", "socket_group"), ("daemon", "admin_group"), ("power", "sysfs_root"),
    ("power", "journal_dir"), ("power", "npu"), ("power", "gpu"), ("power", "board"),
    ("sensors", "light"), ("sensors", "pir"),
]


@pytest.mark.parametrize("blank", ["", "  "])
@pytest.mark.parametrize(("section", "key"), BLANK_KEYS)
def test_a_blank_path_or_name_is_a_config_error(section: str, key: str, blank: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({section: {key: blank}})
    assert info.value.problems == [f"{section}.{key}: got {blank!r}; {BLANK}"]


def test_blank_paths_in_lists_and_tables_are_config_errors() -> None:
    raw = {
        "power": {"runtime_pm_devices": ["devices/platform/npu", " "]},
        "model": {"variants": {"small": {"path": ""}}},
        "rules": [{"profile": "powersave", "temp_above_c": 70.0, "zone": ""}],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert sorted(info.value.problems) == [
        f"model.variants.small.path: got ''; {BLANK}",
        f"power.runtime_pm_devices.1: got ' '; {BLANK}",
        f"rules.0.zone: got ''; {BLANK}",
    ]


def test_a_malformed_udev_source_is_a_config_error() -> None:
    """check-config passed it; `run` then failed at start with exit 69, not 78."""
    with pytest.raises(ConfigError) as info:
        parse_config({"camera": {"source": "udev:ID_SERIAL"}})
    assert info.value.problems == [
        "camera.source: got 'udev:ID_SERIAL'; 'udev:ID_SERIAL': expected "
        "udev:KEY=VALUE[,KEY=VALUE...]"
    ]


def test_a_source_of_non_ascii_digits_is_a_file_not_a_camera_index() -> None:
    """'²'.isdigit() is true and int('²') raises: the daemon failed at start naming int()."""
    assert parse_config({"camera": {"source": "²"}}).camera.source == "²"
    assert source_kind("²") == "file"
    assert source_kind("2") == "v4l2"


def test_an_unknown_synthetic_scene_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"camera": {"source": "synthetic:nope"}})
    [problem] = info.value.problems
    assert problem.startswith("camera.source: got 'synthetic:nope'; unknown scene; known: ")
    assert "office" in problem and "person" in problem


LIGHT_FORMS = "must be auto, none or iio:deviceN (N a number: a device in /sys/bus/iio/devices)"


@pytest.mark.parametrize("light", ["iio:devcie0", "Auto", "bh1750", "iio:device", "iio:device1/"])
def test_a_light_sensor_that_no_device_can_be_named_is_a_config_error(
    tmp_path: Path, light: str
) -> None:
    """A typo was taken as a sensor not there yet: one warning at start, no light reading,
    and the light rules never held. The kernel names every IIO device iio:deviceN."""
    with pytest.raises(ConfigError) as info:
        parse_config({"sensors": {"light": light}})
    assert info.value.problems == [f"sensors.light: got {light!r}; {LIGHT_FORMS}"]
    config = tmp_path / "config.toml"
    config.write_text(f'[sensors]\nlight = "{light}"\n')
    res = run_cli("check-config", str(config))
    assert res.returncode == 78 and f"sensors.light: got {light!r}" in res.stderr, res.stderr


@pytest.mark.parametrize("light", ["auto", "none", "iio:device0", "iio:device12"])
def test_the_light_sensor_forms_the_sensor_thread_takes_are_valid(light: str) -> None:
    assert parse_config({"sensors": {"light": light}}).sensors.light == light


def test_a_config_that_starts_with_a_utf8_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Notepad's UTF-8 (before 2019) starts with one: tomllib refused the first line as
    "Invalid statement (at line 1, column 1)", a line that looks right in every editor."""
    config = tmp_path / "config.toml"
    config.write_bytes(b"\xef\xbb\xbf[gate]\r\nthreshold = 20\r\n")
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d/10-bom.toml").write_bytes(b"\xef\xbb\xbf[gate]\nmin_area = 7\n")
    cfg = load_config(config)
    assert (cfg.gate.threshold, cfg.gate.min_area) == (20, 7)


def test_a_config_that_is_a_link_to_nothing_says_so(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.symlink_to(tmp_path / "wattgate.toml.dpkg-old")
    res = run_cli("check-config", str(config))
    assert res.returncode == 78, res.stderr
    assert (f"bad config {config}:\n  a symbolic link to {tmp_path}/wattgate.toml.dpkg-old, "
            "which does not exist") in res.stderr, res.stderr


def test_drop_ins_that_cannot_be_listed_are_a_config_error_not_left_out(
    reachable_tmp: Path
) -> None:
    """A config.d the daemon's user may not read gave no drop-ins, without a word: the
    daemon ran without their settings. An unreadable drop-in file was refused already."""
    config = reachable_tmp / "config.toml"
    config.write_text("[gate]\nthreshold = 20\n")
    dropins = reachable_tmp / "config.d"
    dropins.mkdir(mode=0o700)
    (dropins / "10-site.toml").write_text("[gate]\nthreshold = 40\n")
    assert load_config(config).gate.threshold == 40  # root may read it
    report = run_as(NOBODY, NOBODY, lambda: str(load_config(config).gate.threshold))
    assert report == (f"raised ConfigError('{dropins}: cannot list its drop-ins: Permission "
                      "denied')"), report


def test_a_config_d_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[gate]\nthreshold = 20\n")
    (tmp_path / "config.d").write_text("[gate]\nthreshold = 40\n")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.source == str(tmp_path / "config.d")
    assert info.value.problems == [
        "is not a directory (drop-ins go in a directory config.d beside the main file)"
    ]
