"""README.md and docs/power.md say what the code does: every key in the README's config
table exists with the default shown, every `wattgate ...` command shown parses, the sample
config error is the one check-config prints, the exit codes are the ones returned, the make
targets and repository paths named exist, and the built-in profiles are the ones listed."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any, Optional

import pytest

from wattgate import cli
from wattgate.config import BUILTIN_PROFILES, EXIT_CONFIG, Config, ModelConfig

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
POWER = (REPO / "docs" / "power.md").read_text(encoding="utf-8")
DOCS = {"README.md": README, "docs/power.md": POWER}


def section(text: str, title: str) -> str:
    """The body of the `## title` section, up to the next `## `."""
    start = text.index(f"\n## {title}\n") + len(title) + 5
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of each row of the Markdown table whose header line starts with header."""
    lines = text[text.index(header):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


# -- the configuration table -------------------------------------------------------------

WORDS: dict[str, Any] = {"true": True, "false": False, "unset": None, "found": None,
                         "detected": None, "bundled BlazeFace": None}


def documented(text: str) -> Any:
    """A default as the table writes it, as the value config.py holds."""
    if text in WORDS:
        return WORDS[text]
    inner = text.strip("`")
    if inner in ("{}", "[]"):
        return {} if inner == "{}" else []
    for parse in (lambda s: int(s, 0), float):
        try:
            return parse(inner)
        except ValueError:
            pass
    return inner


def config_rows() -> list[tuple[str, str]]:
    """(key, documented default) for every key of the README's config table."""
    pairs: list[tuple[str, str]] = []
    for cells in table_rows(README, "| key | default | meaning |"):
        keys = re.findall(r"`([a-z_]+\.[a-z_]+)`", cells[0])
        if not keys:
            continue
        values = [cells[1]] if len(keys) == 1 else [v.strip() for v in cells[1].split(",")]
        if len(values) == 1:  # one default shared by the row's keys
            values *= len(keys)
        assert len(values) == len(keys), f"{cells[0]}: {len(keys)} keys, defaults {cells[1]}"
        pairs.extend(zip(keys, values))
    return pairs


CONFIG_ROWS = config_rows()


def test_the_config_table_has_rows() -> None:
    assert len(CONFIG_ROWS) > 40


@pytest.mark.parametrize(("key", "text"), CONFIG_ROWS, ids=[k for k, _ in CONFIG_ROWS])
def test_config_table_default_is_the_code_default(key: str, text: str) -> None:
    section_name, name = key.split(".")
    defaults = Config()
    assert section_name in Config.model_fields, f"{key}: no section [{section_name}]"
    part = getattr(defaults, section_name)
    assert name in type(part).model_fields, f"{key}: no such key"
    assert getattr(part, name) == documented(text), f"{key}: README says {text}"


def test_config_table_tables_and_builtin_profiles() -> None:
    rows = {cells[0]: cells[1] for cells in table_rows(README, "| key | default | meaning |")}
    assert "variants" in ModelConfig.model_fields
    assert Config().model.variants == {} and rows["`model.variants.NAME`"] == "none"
    assert Config().rules == [] and rows["`[[rules]]`"] == "none"
    listed = {name.strip() for name in rows["`[profiles.NAME]`"].split(",")}
    assert listed == set(BUILTIN_PROFILES)


def test_power_md_lists_the_builtin_profiles() -> None:
    rows = table_rows(POWER, "| profile | idle | active |")
    assert [re.sub(r"`(\w+)`.*", r"\1", cells[0]) for cells in rows] == list(BUILTIN_PROFILES)
    assert "(default)" in next(c[0] for c in rows if c[0].startswith("`balanced`"))
    assert Config().power.profile == "balanced"


# -- commands ------------------------------------------------------------------------------


def code_lines(text: str) -> list[str]:
    """Lines of fenced code blocks and of indented (4-space) blocks."""
    lines = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            lines.append(line)
        elif line.startswith("    ") and line.strip():
            lines.append(line.strip())
    return lines


def shown_commands() -> list[tuple[str, str]]:
    """(document, command) for every `wattgate ...` command in a code block or inline."""
    found = []
    for doc, text in DOCS.items():
        for line in code_lines(text):
            match = re.match(r"^(?:\$ )?(?:\.venv/bin/)?(wattgate \S.*)$", line.strip())
            if match:
                # a comment, or the synopsis' description after a run of spaces
                command = re.split(r"\s+#|\s{2,}", match.group(1))[0].strip()
                found.append((doc, command))
        found.extend((doc, m) for m in re.findall(r"`((?:\.venv/bin/)?wattgate [^`]+)`", text))
    return sorted(set(found))


COMMANDS = shown_commands()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def target(words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)parser a command's words lead to, and the names that led there."""
    parser, path = cli.build_parser(), list[str]()
    for word in words:
        nested = subcommands(parser)
        if word not in nested:
            break
        parser, path = nested[word], [*path, word]
    return parser, path


def placeholders(path: list[str], tmp: Path) -> dict[str, str]:
    return {"DIR": str(tmp), "PATH": str(tmp / "config.toml"), "N": "0", "P": "balanced",
            "MS": "5", "NAME": "gate" if path[:1] == ["bench"] else "balanced"}


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) > 20


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_a_command_shown_parses(doc: str, command: str, tmp_path: Path) -> None:
    """Each subcommand exists and takes every option shown; a command without
    alternatives (`|`, `/`) or `...` parses as a whole, placeholders filled in."""
    words = command.split()[1:]
    if "/" in words:  # "wattgate probe / simulate / bench"
        names = [w for w in words if w != "/"]
        assert set(names) <= set(subcommands(cli.build_parser())), f"{doc}: {command}"
        return
    parser, path = target(words)
    assert path, f"{doc}: {command}: no such subcommand"
    options = set(parser._option_string_actions)
    for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", command):
        assert option in options, f"{doc}: {command}: {' '.join(path)} has no {option}"
    if "|" in command or "..." in command:
        return
    values = placeholders(path, tmp_path)
    argv = [values.get(w, w) for w in shlex.split(command.replace("[", "").replace("]", ""))]
    try:
        cli.build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{doc}: {command} does not parse (exit {exc.code})")


# -- outputs and exit codes ----------------------------------------------------------------


def test_check_config_prints_the_sample_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = README[README.index("$ wattgate check-config "):]
    block = text[: text.index("```")].strip().splitlines()
    file = block[0].split()[-1]
    match = re.match(r"\s*(\w+)\.(\w+): got (\S+);", block[2])
    assert match, block
    table, key, value = match.groups()
    (tmp_path / file).write_text(f"[{table}]\n{key} = {value}\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check-config", file]) == EXIT_CONFIG
    assert capsys.readouterr().err.splitlines() == block[1:]


def clause(text: str, marker: str) -> str:
    """The ;-separated clause of text that contains marker."""
    return next(part.strip() for part in text.split(";") if marker in part)


def test_exit_codes_are_the_ones_returned() -> None:
    codes = " ".join(section(README, "Exit codes").split())
    assert clause(codes, "bad config").startswith(f"{EXIT_CONFIG} bad config")
    assert clause(codes, "no model").startswith(f"{cli.EXIT_UNAVAILABLE} no model")
    for name, code in cli.CLIENT_EXIT_CODES.items():
        if f"`{name}`" in codes:
            assert clause(codes, f"`{name}`").startswith(str(code)), name
    assert cli.CLIENT_EXIT_CODES["timeout"] == cli.CLIENT_EXIT_CODES["busy"]
    assert "did not answer in time" in clause(codes, "`busy`")


def test_a_client_without_a_daemon_exits_as_documented(tmp_path: Path) -> None:
    assert cli.main(["status", "--socket", str(tmp_path / "none.sock")]) == 69


# -- make targets and paths ----------------------------------------------------------------


def test_make_targets_shown_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z]+):", makefile, re.MULTILINE))
    shown = set(re.findall(r"`make (\w+)`", README))
    shown |= {m for line in code_lines(README) for m in re.findall(r"^make (\w+)", line)}
    assert shown, "no make target found in README.md"
    assert shown <= targets, shown - targets


GENERATED = {"bench/results/latest.json"}  # written by `make bench`, git-ignored


def repo_path(token: str) -> Optional[str]:
    """token as a path in the repository, or None when it names something else."""
    if token.startswith(("/", "./")) or "/" not in token:
        return None
    first = token.split("/")[0]
    return token if first == ".." or (REPO / first).exists() else None


def exists(path: str) -> bool:
    """path is in the repository (a glob matches something); one outside it never is."""
    return not path.startswith("..") and any(REPO.glob(path.rstrip("/")))


def test_repository_paths_named_exist() -> None:
    missing = []
    for doc, text in DOCS.items():
        for token in re.findall(r"`([^`\s]+)`", text):
            path = repo_path(token)
            if path is None or path in GENERATED:
                continue
            if not exists(path):
                missing.append(f"{doc}: {token}")
    assert not missing


def test_unit_files_named_are_in_systemd() -> None:
    text = section(README, "systemd and packages")
    named = set(re.findall(r"`(wattgate\.(?:service|socket|sysusers|tmpfiles))`", text))
    named |= {Path(p).name for p in re.findall(r"`(systemd/[^`]+)`", text)}
    assert {"wattgate.socket", "wattgate.sysusers", "wattgate.tmpfiles"} <= named
    assert not [name for name in named if not (REPO / "systemd" / name).is_file()]
