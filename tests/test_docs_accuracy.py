"""config.toml's comments say what the config models do: the ranges they state are the
ones the loader enforces, the names they list are the ones it takes, and every example they
comment out is one it takes too."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import annotated_types
import pytest
import tomllib
from pydantic import BaseModel

from wattgate.boards import BOARDS
from wattgate.config import (
    EXIT_CONFIG,
    Config,
    ConfigError,
    ModelVariant,
    ProfileConfig,
    RuleConfig,
    parse_config,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = (REPO / "config.toml").read_text(encoding="utf-8")

KEY_LINE = re.compile(r"^#? ?([a-z_]+) = ")
SECTION_LINE = re.compile(r"^(?:# )?\[\[?([a-zA-Z0-9_.-]+)\]\]?\s*$")


def key_comments(text: str) -> dict[tuple[str, str], str]:
    """(table, key) -> the comment lines right above the key's line (set or commented out),
    joined. A key shown in several tables of one kind keeps the first comment found."""
    comments: dict[tuple[str, str], str] = {}
    table, lines = "", list[str]()
    for line in text.splitlines():
        header = SECTION_LINE.match(line)
        key = KEY_LINE.match(line)
        if header:
            table, lines = header.group(1), []
        elif key:
            comments.setdefault((table, key.group(1)), " ".join(lines))
            lines = []
        elif line.startswith("#"):
            lines.append(line.lstrip("#").strip())
        else:
            lines = []
    return comments


COMMENTS = key_comments(SHIPPED)


def model_of(table: str) -> Optional[type[BaseModel]]:
    """The config model that holds the keys of a config.toml table."""
    parts = table.split(".")
    if parts[0] == "profiles":
        return ProfileConfig
    if parts[0] == "rules":
        return RuleConfig
    if parts[:2] == ["model", "variants"]:
        return ModelVariant
    field = Config.model_fields.get(parts[0])
    if field is None or len(parts) != 1:
        return None
    annotation = field.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) \
        else None


def bounds(model: type[BaseModel], key: str) -> dict[str, Any]:
    """The key's numeric bounds: ge, gt, le, lt as the model declares them."""
    found: dict[str, Any] = {}
    for item in model.model_fields[key].metadata:
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, name.capitalize())):
                found[name] = getattr(item, name)
    return found


def stated_ranges() -> list[tuple[str, str, Optional[float], Optional[float]]]:
    """(table, key, lowest, highest) for each numeric key whose comment states its range:
    "at most N", "(A..B)" or "(A-B)"; a side not stated is None."""
    found: list[tuple[str, str, Optional[float], Optional[float]]] = []
    for (table, key), comment in COMMENTS.items():
        model = model_of(table)
        if model is None or key not in model.model_fields:
            continue
        low: Optional[float] = None
        high: Optional[float] = None
        pair = re.search(r"\((\d+(?:\.\d+)?)(?:\.\.|-)(\d+(?:\.\d+)?)\)", comment)
        most = re.search(r"\b[Aa]t most (\d+(?:\.\d+)?)\b(?! bytes| characters)", comment)
        if pair:
            low, high = float(pair.group(1)), float(pair.group(2))
        elif most:
            high = float(most.group(1))
        else:
            continue
        found.append((table, key, low, high))
    return found


RANGES = stated_ranges()


def test_config_toml_states_some_ranges() -> None:
    assert {("camera", "stall_s"), ("model", "max_detections"), ("gate", "threshold")} <= {
        (table, key) for table, key, _, _ in RANGES
    }


@pytest.mark.parametrize(
    ("table", "key", "low", "high"), RANGES, ids=[f"{t}.{k}" for t, k, _, _ in RANGES]
)
def test_a_range_config_toml_states_is_the_one_enforced(
    table: str, key: str, low: Optional[float], high: Optional[float]
) -> None:
    model = model_of(table)
    assert model is not None
    limits = bounds(model, key)
    if low is not None:
        assert limits.get("ge") == low, f"{table}.{key}: config.toml says from {low}, {limits}"
    if high is not None:
        assert limits.get("le") == high, f"{table}.{key}: config.toml says to {high}, {limits}"


def stated_lengths() -> list[tuple[str, str, int]]:
    """(table, key, most) for each text key whose comment says "at most N characters"."""
    found = []
    for (table, key), comment in COMMENTS.items():
        model = model_of(table)
        most = re.search(r"\b[Aa]t most (\d+) characters\b", comment)
        if model is not None and key in model.model_fields and most:
            found.append((table, key, int(most.group(1))))
    return found


LENGTHS = stated_lengths()


def test_config_toml_states_some_lengths() -> None:
    assert {("rules", "name")} <= {(table, key) for table, key, _ in LENGTHS}


@pytest.mark.parametrize(
    ("table", "key", "most"), LENGTHS, ids=[f"{t}.{k}" for t, k, _ in LENGTHS]
)
def test_a_length_config_toml_states_is_the_one_enforced(table: str, key: str, most: int) -> None:
    model = model_of(table)
    assert model is not None
    lengths = [item.max_length for item in model.model_fields[key].metadata
               if isinstance(item, annotated_types.MaxLen)]
    assert lengths == [most], f"{table}.{key}: config.toml says at most {most} characters"


# -- power.board ---------------------------------------------------------------------------


def check_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """`wattgate check-config` on a file holding text, as a user runs it."""
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "wattgate.cli", "check-config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )


def test_config_toml_lists_the_known_boards() -> None:
    comment = COMMENTS[("power", "board")]
    listed = {name for name in BOARDS if re.search(rf"\b{re.escape(name)}\b", comment)}
    assert listed == set(BOARDS), comment


@pytest.mark.parametrize("board", BOARDS)
def test_a_known_board_is_taken(board: str, tmp_path: Path) -> None:
    """Also jetson-orin-nano, which has no energy model (it measures itself): naming the
    board a daemon runs on must not stop it."""
    done = check_config(tmp_path, f'[power]\nboard = "{board}"\n')
    assert done.returncode == 0, done.stderr


def test_an_unknown_board_is_a_config_error(tmp_path: Path) -> None:
    """A mistyped board was taken without a word, and the daemon then had no watts
    estimate to show."""
    done = check_config(tmp_path, '[power]\nboard = "rk3599"\n')
    assert done.returncode == EXIT_CONFIG, done.stderr
    line = done.stderr.splitlines()[1].strip()
    assert line.startswith("power.board: got 'rk3599';"), done.stderr
    assert all(name in line for name in BOARDS), line


# -- the examples config.toml comments out -------------------------------------------------

EXAMPLE_HEADER = re.compile(r"^# ?(\[\[?[\w.-]+\]\]?)\s*$")
EXAMPLE_KEY = re.compile(r"^# ?([a-z_]+ = .*)$")


def is_toml(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def uncommented(text: str) -> str:
    """config.toml with every commented-out table header and `key = value` line taken in,
    as a user who uncomments an example does; a note after a run of spaces is dropped."""
    lines = []
    for line in text.splitlines():
        header = EXAMPLE_HEADER.match(line)
        key = EXAMPLE_KEY.match(line)
        setting = re.split(r"\s{2,}", key.group(1))[0] if key else ""
        if header:
            lines.append(header.group(1))
        elif setting and is_toml(setting):
            lines.append(setting)
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def test_config_toml_comments_out_examples() -> None:
    assert uncommented(SHIPPED).count("\n[[rules]]\n") >= 3


def test_every_example_config_toml_comments_out_is_valid() -> None:
    """Each commented-out key and table, uncommented, is one the loader takes: a user who
    uncomments an example gets a config that starts."""
    try:
        parse_config(tomllib.loads(uncommented(SHIPPED)), "config.toml uncommented")
    except ConfigError as exc:
        pytest.fail("\n".join(exc.problems))


def commented_out_keys(text: str) -> list[tuple[str, str]]:
    """(table, key) of each key line config.toml comments out under a table it sets."""
    found, table = [], ""
    for line in text.splitlines():
        header = SECTION_LINE.match(line)
        if header:
            table = header.group(1) if not line.startswith("#") else ""
        key = EXAMPLE_KEY.match(line)
        if key and table and is_toml(re.split(r"\s{2,}", key.group(1))[0]):
            found.append((table, key.group(1).split(" = ")[0]))
    return found


TOP_LEVEL_EXAMPLES = [(t, k) for t, k in commented_out_keys(SHIPPED) if "." not in t]


def test_a_commented_out_key_of_a_table_is_unset_by_default() -> None:
    assert len(TOP_LEVEL_EXAMPLES) >= 5, TOP_LEVEL_EXAMPLES
    defaults = Config()
    set_by_default = [f"{table}.{key}" for table, key in TOP_LEVEL_EXAMPLES
                      if getattr(getattr(defaults, table), key) is not None]
    assert not set_by_default
