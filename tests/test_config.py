"""config.toml validation: the shipped file, drop-ins, and errors that name the key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wattgate.config import Config, ConfigError, json_schema, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "config.toml"


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
    assert (cfg.camera.source, cfg.camera.fps, cfg.camera.width) == ("a.mp4", 30.0, 1280)
    assert cfg.gate.threshold == 20


def test_bad_dropin_is_named(tmp_path: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text("")
    (tmp_path / "config.d").mkdir()
    bad = tmp_path / "config.d" / "50-bad.toml"
    bad.write_text("[camera\n")
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
