"""The sysfs core: text attributes under a root, typed errors, skip-if-equal writes.

Writes that fail are produced three honest ways: real OS errors from the tree
itself (a directory where an attribute should be: EISDIR; a link to /dev/full:
ENOSPC), a real EACCES by writing as an unprivileged user, and the kernel's own
EINVAL/EBUSY answers, which a plain file cannot give, injected at the I/O layer
by FaultyIO (tests/fixtures/boards).
"""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import run_as
from tests.fixtures.boards import FaultyIO, faults, materialize
from wattgate.drivers.sysfs import (
    AttributeBusy,
    AttributeDenied,
    AttributeInvalid,
    AttributeMissing,
    Sysfs,
    SysfsError,
)
from wattgate.drivers.thermal import discover_zones

GOV = "devices/system/cpu/cpufreq/policy0/scaling_governor"
NPU_GOV = "devices/platform/fdab0000.npu/devfreq/fdab0000.npu/governor"


class CountingIO:
    def __init__(self) -> None:
        from wattgate.drivers.sysfs import OsIO

        self.os = OsIO()
        self.writes: list[tuple[Path, str]] = []

    def read_text(self, path: Path) -> str:
        return self.os.read_text(path)

    def write_text(self, path: Path, data: str) -> None:
        self.writes.append((path, data))
        self.os.write_text(path, data)


def test_read_strips_and_write_ends_with_newline(tmp_path: Path) -> None:
    fs = Sysfs(materialize("rk3588", tmp_path))
    assert fs.read(GOV) == "schedutil"
    assert fs.read_raw(GOV) == "schedutil\n"
    assert fs.write(GOV, "performance") is True
    assert (tmp_path / GOV).read_text() == "performance\n"
    assert fs.read_int("devices/system/cpu/cpufreq/policy4/cpuinfo_max_freq") == 2400000
    assert fs.read_words("class/devfreq/dmc/available_frequencies")[0] == "528000000"


def test_write_is_skipped_when_value_is_already_there(tmp_path: Path) -> None:
    io = CountingIO()
    fs = Sysfs(materialize("rk3588", tmp_path), io)
    assert fs.write(GOV, "schedutil") is False
    assert fs.write(GOV, " schedutil\n") is False
    assert io.writes == []
    assert fs.write(GOV, "ondemand") is True
    assert io.writes == [(tmp_path / GOV, "ondemand\n")]


def test_missing_attribute_is_typed_and_names_the_path(tmp_path: Path) -> None:
    fs = Sysfs(materialize("rk3588", tmp_path))
    attr = "devices/system/cpu/cpufreq/policy0/energy_performance_preference"
    with pytest.raises(AttributeMissing) as info:
        fs.read(attr)
    assert info.value.attribute == attr
    assert info.value.path == tmp_path / attr
    assert info.value.errno == errno.ENOENT
    assert str(tmp_path / attr) in str(info.value)
    with pytest.raises(AttributeMissing):
        fs.write(attr, "power")
    assert fs.read_opt(attr) is None and fs.read_int_opt(attr) is None


def test_directory_and_dev_full_are_real_write_failures(tmp_path: Path) -> None:
    fs = Sysfs(materialize("write-fail", tmp_path))
    with pytest.raises(SysfsError) as info:
        fs.write_raw("devices/system/cpu/cpufreq/policy6/scaling_min_freq", "408000\n")
    assert info.value.errno == errno.EISDIR
    assert type(info.value) is SysfsError
    with pytest.raises(SysfsError) as info:
        fs.write_raw("devices/system/cpu/cpufreq/policy6/scaling_max_freq", "1800000\n")
    assert info.value.errno == errno.ENOSPC


@pytest.mark.parametrize(
    ("attribute", "kind", "err"),
    [
        ("devices/system/cpu/cpufreq/policy4/scaling_max_freq", AttributeInvalid, errno.EINVAL),
        (NPU_GOV, AttributeBusy, errno.EBUSY),
        ("devices/platform/fdab0000.npu/power/control", AttributeDenied, errno.EACCES),
    ],
)
def test_kernel_errors_become_typed_errors(
    tmp_path: Path, attribute: str, kind: type[SysfsError], err: int
) -> None:
    root = materialize("write-fail", tmp_path)
    fs = Sysfs(root, FaultyIO(root, faults("write-fail")))
    with pytest.raises(kind) as info:
        fs.write_raw(attribute, "x\n")
    assert info.value.errno == err
    assert info.value.attribute == attribute
    # the same attribute reached through its class symlink fails the same way
    if attribute == NPU_GOV:
        with pytest.raises(AttributeBusy):
            fs.write("class/devfreq/fdab0000.npu/governor", "performance")


def test_permission_error_names_attribute_and_udev_rule(tmp_path: Path) -> None:
    root = materialize("write-fail", tmp_path)
    fs = Sysfs(root, FaultyIO(root, faults("write-fail")))
    attr = "devices/platform/fdab0000.npu/power/control"
    with pytest.raises(AttributeDenied) as info:
        fs.write(attr, "on")
    message = str(info.value)
    assert attr in message
    assert "systemd/60-wattgate.rules" in message


def _write_as(uid: int, root: Path, attribute: str) -> str:
    """Write through Sysfs as ``uid``; "wrote", "denied ..." or what else happened."""

    def write() -> str:
        try:
            Sysfs(root).write(attribute, "performance")
        except AttributeDenied as exc:
            return f"denied {exc}"
        return "wrote"

    return run_as(uid, uid, write)


def test_real_eacces_as_unprivileged_user() -> None:
    """A real EACCES: a 0644 attribute owned by root, written by user nobody.

    As non-root, the file is made 0444 instead; either way the kernel says EACCES.
    """
    base = Path(tempfile.mkdtemp(prefix="wattgate-eacces-"))
    try:
        root = materialize("rk3588", base / "sys")
        for dirpath, _dirnames, _ in os.walk(base):
            os.chmod(dirpath, 0o755)
        os.chmod(root / GOV, 0o644 if os.geteuid() == 0 else 0o444)
        uid = 65534 if os.geteuid() == 0 else os.geteuid()
        report = _write_as(uid, root, GOV)
        assert report.startswith("denied"), report
        assert GOV in report and "60-wattgate.rules" in report
        assert (root / GOV).read_text() == "schedutil\n"
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_resolve_follows_class_links_inside_the_root(tmp_path: Path) -> None:
    fs = Sysfs(materialize("rk3588", tmp_path))
    assert fs.resolve("class/devfreq/fdab0000.npu") == (
        "devices/platform/fdab0000.npu/devfreq/fdab0000.npu"
    )
    assert fs.link_name("devices/platform/fdab0000.npu/driver") == "RKNPU"
    assert fs.listdir("class/nothing") == []


def test_read_int_rejects_text(tmp_path: Path) -> None:
    fs = Sysfs(materialize("rk3588", tmp_path))
    with pytest.raises(SysfsError):
        fs.read_int(GOV)


def test_an_unreadable_class_directory_lists_as_empty() -> None:
    """A class directory that a hardened kernel or an LSM denies raised PermissionError out
    of discover_zones and the other discovery calls, and the power tick with it. Run as
    user nobody (the test runs as root in CI, where chmod alone denies nothing)."""
    base = Path(tempfile.mkdtemp(prefix="wattgate-eacces-"))
    try:
        root = materialize("rk3588", base / "sys")
        for dirpath, _dirnames, _ in os.walk(base):
            os.chmod(dirpath, 0o755)
        os.chmod(root / "class/thermal", 0o700 if os.geteuid() == 0 else 0o000)
        uid = 65534 if os.geteuid() == 0 else os.geteuid()

        def listing() -> str:
            zones = discover_zones(Sysfs(root))
            return f"{len(Sysfs(root).listdir('class/thermal'))} entries, {len(zones)} zones"

        assert run_as(uid, uid, listing) == "0 entries, 0 zones"
    finally:
        os.chmod(root / "class/thermal", 0o755)
        subprocess.run(["rm", "-rf", str(base)], check=False)
