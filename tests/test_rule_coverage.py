"""Every sysfs attribute the daemon would write, on every board it knows, is writable by its
user once systemd/60-wattgate.rules has run, and the rule hands out nothing on a device the
daemon leaves alone.

The daemon is the one source of truth for what it writes: its own discovery on a fake tree
(PowerController.start with power.enabled = false: it finds the board and lists every knob
a profile may set, and writes nothing) gives the knobs, from a profile that sets every key.
The udev side is the emulation of tests/test_udev_rule.py (no udevd can replay events
against a fake tree) fed with the "add" of every device in the tree, as the coldplug at
boot (systemd-udev-trigger.service, `udevadm trigger --action=add`) and the package's
postinst replay them. Whether the daemon's user may then write a knob is asked of the
kernel, by opening it for writing in a child running as that user.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_as
from tests.test_udev_rule import Event, _user, owned_writable, replay
from tests.test_units import SERVICE, directives
from wattgate.boards import ALL, Board, describe
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController
from wattgate.drivers.accel import GPU_PATTERNS, NPU_PATTERNS

# A profile that sets every key a profile has for a knob, so the daemon lists every knob the
# board has. Governor lists name one that each board's fake tree offers; "powersave" before
# "performance" for intel_pstate, whose EPP the daemon leaves alone under performance.
EVERY_KNOB: dict[str, Any] = {
    "cpu_governor": ["schedutil", "powersave", "performance"],
    "cpu_min_khz": "10%",
    "cpu_max_khz": "90%",
    "cpu_epp": "balance_power",
    "npu_governor": ["performance"],
    "npu_min_hz": "10%",
    "npu_max_hz": "90%",
    "npu_runtime_pm": "auto",
    "npu_autosuspend_ms": 50,
    "gpu_governor": ["performance"],
    "gpu_max_hz": "90%",
    "gpu_govern": "nominal",
    "gpu_railgate": True,
}


@pytest.fixture
def base(reachable_tmp: Path) -> Iterator[Path]:
    _user()  # skips where the rule's chown cannot be run (not root)
    yield reachable_tmp


def driven(root: Path, journal: Path) -> list[str]:
    """The knobs the daemon drives on the tree at ``root``, relative to it, as it names them."""
    cfg = parse_config({
        "power": {"sysfs_root": str(root), "journal_dir": str(journal), "enabled": False,
                  "profile": "every-knob"},
        "profiles": {"every-knob": EVERY_KNOB},
    })
    pc = PowerController(cfg)
    pc.start(0.0)
    try:
        return list(pc.driven)
    finally:
        pc.stop()


def sysfs_tree(board: Board, root: Path) -> Path:
    """``board`` written at ``root`` with sysfs's modes: attributes 0644 and directories 0755,
    all root's."""
    board.write(root)
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def coldplug(root: Path) -> list[Event]:
    """The "add" of every device of the tree: those class/ and bus/ list, and the CPUs.

    DRIVER is the bound driver's name, as the kernel puts it in the uevent of a bound
    device (drivers/base/core.c dev_uevent; udev(7) DRIVER).
    """
    found: dict[str, str] = {}
    for link in sorted(root.glob("class/*/*")):
        found.setdefault(str(link.resolve()), link.parent.name)
    for link in sorted(root.glob("bus/*/devices/*")):
        found.setdefault(str(link.resolve()), link.parent.parent.name)
    for cpu in sorted(root.glob("devices/system/cpu/cpu[0-9]*")):
        found.setdefault(str(cpu.resolve()), "cpu")
    real = root.resolve()
    events = []
    for device, subsystem in found.items():
        driver = Path(device, "driver")
        events.append(Event("add", subsystem, "/" + str(Path(device).relative_to(real)),
                            driver.resolve().name if driver.is_symlink() else ""))
    return events


def unwritable(root: Path, knobs: list[str]) -> dict[str, str]:
    """The knobs that the daemon's user cannot open for writing, with the error."""
    user = _user()

    def attempt() -> str:
        failed = []
        for knob in knobs:
            try:
                os.close(os.open(root / knob, os.O_WRONLY))
            except OSError as exc:
                failed.append(f"{knob}\t{errno.errorcode.get(exc.errno or 0, exc.errno)}")
        return "\n".join(failed)

    report = run_as(user.pw_uid, user.pw_gid, attempt)
    assert not report.startswith("raised"), report
    return dict(line.split("\t") for line in report.splitlines())


def read_write_paths() -> list[Path]:
    return [Path(p.lstrip("-")) for p in directives(SERVICE)["ReadWritePaths"]]


# -- the boards wattgate knows ---------------------------------------------------------------


@pytest.mark.parametrize("board", ALL)
def test_every_knob_the_daemon_drives_is_writable_by_its_user_after_coldplug(
    base: Path, board: str
) -> None:
    root = sysfs_tree(describe(board), base / "sys")
    knobs = driven(root, base / "journal")
    if board != "bare":  # a board with nothing to steer
        assert knobs, f"the daemon found no knob on {board}"
    assert set(unwritable(root, knobs)) == set(knobs)  # sysfs's modes: root's alone
    replay(root, coldplug(root))
    assert unwritable(root, knobs) == {}
    # ...and ProtectKernelTunables= leaves each one writable: its real file is under one of
    # the unit's ReadWritePaths= (the tree stands for /sys).
    opened = read_write_paths()
    for knob in knobs:
        real = Path("/sys") / (root / knob).resolve().relative_to(root.resolve())
        assert any(real.is_relative_to(p) for p in opened), (board, knob, str(real))


# -- devfreq devices by name ----------------------------------------------------------------
#
# The daemon takes a devfreq device for the NPU or the GPU by its name: any name that one of
# drivers/accel.py's patterns matches, whatever the case. The names checked are those of
# REFERENCE.md ("devfreq": RK3588 fdab0000.npu, fb000000.gpu and dmc; Jetson 17000000.ga10b,
# gv11b, gp10b) and names made from each of the daemon's patterns: a DT platform device is
# "<unit address>.<node name>", or "<parent>:<node name>" for a node without reg
# (drivers/of/platform.c of_device_make_bus_id), and the devfreq device takes that name
# (drivers/devfreq/devfreq.c devfreq_add_device: dev_set_name(..., dev_name(dev))).

REFERENCE = ("fdab0000.npu", "fb000000.gpu", "dmc", "17000000.ga10b", "17000000.gv11b",
             "17000000.gp10b")
LEADING = ("", "fdab0000.", "soc:")
TRAILING = ("", "0")
DEVICE_NAME = re.compile(r"[a-z0-9]+([.:]?[a-z0-9_-]+)*")


def names_from(pattern: str) -> list[str]:
    """Device-like names ``pattern`` matches: a leading * as each of LEADING, a trailing one
    as each of TRAILING; in lower and upper case."""
    assert re.fullmatch(r"\*?[^*?\[]+\*?", pattern), f"{pattern}: make names for it here"
    names = set()
    for lead in LEADING if pattern.startswith("*") else ("",):
        for trail in TRAILING if pattern.endswith("*") else ("",):
            name = lead + pattern.strip("*") + trail
            if DEVICE_NAME.fullmatch(name):
                assert fnmatch.fnmatch(name, pattern), (name, pattern)
                names |= {name, name.upper()}
    return sorted(names)


def accelerator(name: str) -> Board:
    """A platform device ``name`` with its devfreq, runtime PM and a railgate_enable (the
    daemon writes that on a GPU that has one)."""
    device = f"devices/platform/{name}"
    b = Board()
    b.device(device, bus="platform", runtime_pm={
        "control": "auto", "autosuspend_delay_ms": 100, "runtime_status": "suspended"})
    b.attrs(device, {"railgate_enable": 1})
    b.devfreq(device, name, governor="simple_ondemand",
              governors="userspace performance simple_ondemand",
              frequencies=[300_000_000, 600_000_000, 1_000_000_000], cur_hz=300_000_000)
    return b


@pytest.mark.parametrize("source", ["REFERENCE.md", *NPU_PATTERNS, *GPU_PATTERNS])
def test_the_rule_grants_the_devfreq_devices_the_daemon_takes_and_no_other(
    base: Path, source: str
) -> None:
    names = list(REFERENCE) if source == "REFERENCE.md" else names_from(source)
    missed, granted = {}, {}
    for i, name in enumerate(names):
        root = sysfs_tree(accelerator(name), base / f"sys{i}")
        knobs = driven(root, base / f"journal{i}")
        replay(root, coldplug(root))
        if knobs:
            if failed := unwritable(root, knobs):
                missed[name] = sorted(failed)
        elif owned := owned_writable(root):
            granted[name] = sorted(owned)
    assert not missed, f"the daemon drives these and cannot write them: {missed}"
    assert not granted, f"the rule grants these on devices the daemon leaves alone: {granted}"


def test_names_from_patterns_reach_every_case() -> None:
    """The names the test above tries include those only the daemon's broadest patterns take."""
    made = {n for p in (*NPU_PATTERNS, *GPU_PATTERNS) for n in names_from(p)}
    assert {"npu", "soc:npu", "NPU0", "fdab0000.npu", "fdab0000.gpu0", "SOC:GPU"} <= made
    assert not any(".." in n or n.startswith(".") for n in made), made


# -- PCI accelerators behind every root complex of the boards ---------------------------------
#
# A PCI root bus is the sysfs directory "pci<domain>:<bus>" (drivers/pci/probe.c
# pci_register_host_bridge), a child of its host bridge's parent device. An ACPI host bridge
# has none (drivers/acpi/pci_root.c: pci_create_root_bus(NULL, ...)), so on PCs the root bus
# sits at the top of /sys/devices; a device-tree PCIe controller is a platform device and its
# root bus, whatever its domain, sits under it: under /sys/devices/platform on mainline
# kernels, at the top of /sys/devices on L4T before JetPack 6 (as the Jetson GPUs in
# systemd/wattgate.service). The daemon drives a PCI NPU's runtime PM wherever it is.
PCI_ACCELERATORS = {
    # Intel/AMD PC with a Coral or Hailo M.2/PCIe card behind a root port of domain 0.
    "pc": "devices/pci0000:00/0000:00:1c.0/0000:03:00.0",
    # RK3588 pcie3x2 (domain 1, buses from 0x10), as a board's sysfs lists it.
    "rk3588": "devices/platform/a40400000.pcie/pci0001:10/0001:10:00.0/0001:11:00.0",
    "rpi5": "devices/platform/axi/1000110000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0",
    # Jetson Orin, JetPack 6: C4, the dev kits' M.2 Key-M (tegra234-p3768-0000.dtsi).
    "orin-jp6": "devices/platform/bus@0/14160000.pcie/pci0004:00/0004:00:00.0/0004:01:00.0",
    # JetPack 5, the controllers the dev kits wire to slots: Orin Nano/NX C1 Key-E, C4 and
    # C7 Key-M (tegra234-p3768-0000.dtsi), AGX Orin C1, C4, C5 x16 slot
    # (tegra234-p3737-0000+p3701.dtsi), AGX Xavier C0, C1, C3, C5
    # (tegra194-p2972-0000.dts).
    "orin-jp5-c1": "devices/14100000.pcie/pci0001:00/0001:00:00.0/0001:01:00.0",
    "xavier-jp5-c3": "devices/14140000.pcie/pci0003:00/0003:00:00.0/0003:01:00.0",
    "orin-jp5-c4": "devices/14160000.pcie/pci0004:00/0004:00:00.0/0004:01:00.0",
    "xavier-jp5-c0": "devices/14180000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0",
    "xavier-jp5-c5": "devices/141a0000.pcie/pci0005:00/0005:00:00.0/0005:01:00.0",
    "orin-jp5-c7": "devices/141e0000.pcie/pci0007:00/0007:00:00.0/0007:01:00.0",
    # JetPack 4: Nano's M.2 Key-E (pcie@1003000), TX2's x4 slot (pcie-controller@10003000).
    "nano-jp4": "devices/1003000.pcie/pci0000:00/0000:00:02.0/0000:01:00.0",
    "tx2-jp4": "devices/10003000.pcie-controller/pci0000:00/0000:00:01.0/0000:01:00.0",
}


def pci_npu(endpoint: str) -> Board:
    """A Hailo-8 at ``endpoint``, as wattgate/boards/rpi5.py has it, with autosuspend."""
    b = Board()
    b.device(endpoint, bus="pci", driver="hailo", runtime_pm={
        "control": "on", "autosuspend_delay_ms": 100, "runtime_status": "active"})
    b.attrs(endpoint, {"vendor": "0x1e60", "device": "0x2864", "class": "0x128000"})
    b.attrs(f"{endpoint}/hailo_chardev/hailo0", {"dev": "510:0"})
    b.link("class/hailo_chardev/hailo0", f"{endpoint}/hailo_chardev/hailo0")
    return b


@pytest.mark.parametrize("where", sorted(PCI_ACCELERATORS))
def test_a_pci_npu_is_writable_under_the_unit_on_every_root_complex(
    tmp_path: Path, where: str
) -> None:
    root = sysfs_tree(pci_npu(PCI_ACCELERATORS[where]), tmp_path / "sys")
    knobs = driven(root, tmp_path / "journal")
    assert {k.rsplit("/", 1)[-1] for k in knobs} == {"control", "autosuspend_delay_ms"}, knobs
    opened = read_write_paths()
    for knob in knobs:
        real = Path("/sys") / (root / knob).resolve().relative_to(root.resolve())
        assert any(real.is_relative_to(p) for p in opened), (where, str(real))


def test_the_unit_opens_device_subtrees_not_whole_trees() -> None:
    """What the unit opens at the top of /sys/devices is /sys/devices/platform, PCI root buses,
    PCIe host controllers and the Jetson GPUs, one directory each: no glob exists for
    ReadWritePaths= (systemd.exec(5)), and nothing opens /sys/devices, /sys/bus or /sys whole."""
    opened = read_write_paths()
    assert not {Path("/sys"), Path("/sys/devices"), Path("/sys/bus")} & set(opened), opened
    top = {p.name for p in opened if p.parent == Path("/sys/devices")}
    kinds = re.compile(
        r"platform|pci[0-9a-f]{4,}:[0-9a-f]{2}|[0-9a-f]+\.pcie(-controller)?"
        r"|[0-9a-f]+\.(gpu|gp10b|gv11b|ga10b)|gpu\.0"
    )
    assert {name for name in top if not kinds.fullmatch(name)} == set(), top
    assert not any(any(c in str(p) for c in "*?[") for p in opened), opened
