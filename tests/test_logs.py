"""Logging: one line per record on stderr, structured journald entries under systemd."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.boards import materialize
from wattgate.config import parse_config
from wattgate.daemon.logs import (
    MessageId,
    event,
    fields,
    journal_handler,
    set_level,
    setup_logging,
    under_journal,
)
from wattgate.daemon.power import PowerController


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    logging.captureWarnings(False)


def test_fields_are_upper_case_strings_and_none_is_left_out() -> None:
    assert fields(profile="eco", knob="/sys/x", value=600000, ok=True, errno=None) == {
        "PROFILE": "eco",
        "KNOB": "/sys/x",
        "VALUE": "600000",
        "OK": "1",
    }
    for bad in ("_hidden", "1st", "has-dash", "priority", "MESSAGE", "syslog_identifier"):
        with pytest.raises(ValueError):
            fields(**{bad: "x"})


def test_event_carries_a_valid_message_id() -> None:
    assert event(MessageId.PROFILE_CHANGED, profile="eco") == {
        "MESSAGE_ID": MessageId.PROFILE_CHANGED,
        "PROFILE": "eco",
    }
    with pytest.raises(ValueError):
        event("not-an-id")
    ids = [v for k, v in vars(MessageId).items() if k.isupper()]
    assert len(ids) == len(set(ids))
    for mid in ids:
        event(mid)


def test_stderr_has_one_line_per_record_with_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", force_stderr=True)
    log = logging.getLogger("wattgate.power")
    log.debug("not shown")
    log.warning(
        "cannot set %s", "max_freq", extra=event(MessageId.KNOB_FAILED, knob="cpu0 max", value=1)
    )
    try:
        raise OSError(16, "Device or resource busy")
    except OSError:
        log.exception("write failed\nsecond line")
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert "not shown" not in err
    assert " WARNING wattgate.power: cannot set max_freq " in lines[0]
    assert lines[0].endswith('KNOB="cpu0 max" VALUE=1')
    assert MessageId.KNOB_FAILED not in lines[0]
    assert "write failed | second line | Traceback" in lines[1]
    assert lines[1].endswith("OSError: [Errno 16] Device or resource busy")


def test_setup_again_replaces_its_handler_and_keeps_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    setup_logging("warning", force_stderr=True)
    setup_logging("debug", force_stderr=True)
    assert len(root.handlers) == before + 1
    logging.getLogger("wattgate").debug("visible once")
    assert capsys.readouterr().err.count("visible once") == 1
    set_level("error")
    logging.getLogger("wattgate").warning("hidden")
    assert capsys.readouterr().err == ""


def test_bad_level_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"daemon\.log_level"):
        setup_logging("verbose", force_stderr=True)


def test_under_journal_matches_stderr_identity(tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as stream:
        st = os.fstat(stream.fileno())
        same = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        other = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}
        nowhere = str(tmp_path / "no-journal")
        assert under_journal(same, stream, journal_socket=nowhere)
        assert not under_journal(other, stream, journal_socket=nowhere)
        assert not under_journal({}, stream, journal_socket=nowhere)
        # A unit whose stderr goes elsewhere still logs to journald, if journald exists.
        assert not under_journal({"INVOCATION_ID": "ab"}, stream, journal_socket=nowhere)
        (tmp_path / "socket").touch()
        assert under_journal({"INVOCATION_ID": "ab"}, stream, str(tmp_path / "socket"))


def test_journal_entries_carry_structured_fields() -> None:
    sent: list[dict[str, Any]] = []

    def sender(message: str, **kw: Any) -> None:
        sent.append({"MESSAGE": message, **kw})

    log = logging.getLogger("wattgate.test.journal")
    log.propagate = False
    handler = journal_handler(sender)
    log.addHandler(handler)
    try:
        log.warning(
            "profile %s",
            "eco",
            extra=event(MessageId.PROFILE_CHANGED, profile="eco", knob="k", value=3),
        )
        log.error("plain")
    finally:
        log.removeHandler(handler)
    first, second = sent
    assert first["MESSAGE"] == "profile eco"
    assert first["MESSAGE_ID"] == MessageId.PROFILE_CHANGED
    assert (first["PROFILE"], first["KNOB"], first["VALUE"]) == ("eco", "k", "3")
    assert first["SYSLOG_IDENTIFIER"] == "wattgate"
    assert first["PRIORITY"] == "4" and second["PRIORITY"] == "3"
    assert first["LOGGER"] == "wattgate.test.journal"
    # Only journald-valid names travel: no copies of LogRecord internals.
    assert all(k.isupper() for k in first)
    assert "MESSAGE_ID" not in second


def test_every_journal_entry_names_the_profile_in_force(tmp_path: Path) -> None:
    """`journalctl PROFILE=eco` gives everything while eco was in force, not only the line
    that announced it: the power controller says which profile is in force."""
    sent: list[dict[str, Any]] = []
    handler = journal_handler(lambda message, **kw: sent.append({"MESSAGE": message, **kw}))
    root = logging.getLogger()
    root.addHandler(handler)
    power = PowerController(parse_config({
        "power": {"sysfs_root": str(materialize("rk3588", tmp_path / "sys")),
                  "journal_dir": str(tmp_path / "journal"), "profile": "balanced"}}))
    try:
        power.start(0.0)
        power.pin("powersave", "uid 0")
        logging.getLogger("wattgate.camera").warning("camera lost")
        logging.getLogger("wattgate.test").warning("knob", extra=fields(profile="own"))
        power.stop()
        logging.getLogger("wattgate.daemon").warning("stopped")
    finally:
        root.removeHandler(handler)
    lost = next(entry for entry in sent if entry["MESSAGE"] == "camera lost")
    assert lost["PROFILE"] == "powersave" and "MESSAGE_ID" not in lost
    assert next(e for e in sent if e["MESSAGE"] == "knob")["PROFILE"] == "own"
    assert "PROFILE" not in next(e for e in sent if e["MESSAGE"] == "stopped")


_JOURNAL_PROBE = textwrap.dedent(
    """
    import json, logging, os, socket, struct, subprocess, sys
    subprocess.run(["mount", "-t", "tmpfs", "none", "/run/systemd"], check=True)
    os.makedirs("/run/systemd/journal")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("/run/systemd/journal/socket")
    server.settimeout(10)
    os.environ.pop("JOURNAL_STREAM", None)
    os.environ["INVOCATION_ID"] = "0123456789abcdef0123456789abcdef"
    from wattgate.daemon.logs import MessageId, event, setup_logging
    setup_logging("info")
    logging.getLogger("wattgate.power").warning(
        "knob failed\\nsee errno", extra=event(MessageId.KNOB_FAILED, knob="max_freq", value=1)
    )
    data = server.recv(65536)
    entry = {}
    while data:
        line, sep, rest = data.partition(b"\\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            data = rest
        else:  # binary-safe form for values containing newlines
            key = line
            (size,) = struct.unpack("<Q", rest[:8])
            value, data = rest[8 : 8 + size], rest[8 + size + 1 :]
        entry[key.decode()] = value.decode()
    print(json.dumps(entry))
    """
)


def test_real_journald_protocol_in_private_mount_namespace() -> None:
    """The entry reaches a datagram socket at journald's real path, as journald would see it.

    libsystemd's sendv() always talks to /run/systemd/journal/socket, so the test gives a
    child process its own mount namespace with a tmpfs there and listens on that path.
    """
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m not permitted here: {probe.stderr.decode().strip()}")
    out = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", _JOURNAL_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    entry = json.loads(out.stdout)
    assert entry["MESSAGE"] == "knob failed\nsee errno"
    assert entry["MESSAGE_ID"] == MessageId.KNOB_FAILED
    assert entry["KNOB"] == "max_freq" and entry["VALUE"] == "1"
    assert entry["SYSLOG_IDENTIFIER"] == "wattgate"
    assert entry["PRIORITY"] == "4"
    assert entry["LOGGER"] == "wattgate.power"
