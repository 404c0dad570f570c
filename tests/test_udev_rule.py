"""systemd/60-wattgate.rules makes user wattgate the owner, with write, of the attributes we
drive, and gives no group or other user write on them."""

from __future__ import annotations

import fnmatch
import os
import pwd
import re
import shlex
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from wattgate.boards import Board

RULE = Path(__file__).resolve().parents[1] / "systemd" / "60-wattgate.rules"
DRIVEN = [
    "scaling_governor",
    "scaling_min_freq",
    "scaling_max_freq",
    "energy_performance_preference",
    "governor",
    "min_freq",
    "max_freq",
    "power/control",
    "power/autosuspend_delay_ms",
    "gpu_govern",
    "railgate_enable",
]


def rules() -> list[str]:
    text = RULE.read_text().replace("\\\n", " ")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_every_driven_attribute_is_covered() -> None:
    body = " ".join(rules())
    for attr in DRIVEN:
        assert re.search(rf"[/ ]{re.escape(attr)}\b", body), attr


def test_rules_are_well_formed() -> None:
    for line in rules():
        assert "ACTION==" in line and "SUBSYSTEM==" in line and "RUN+=" in line
        run = line.split("RUN+=", 1)[1]
        assert run.startswith('"/bin/sh -c ')
        assert "chown wattgate" in run and "chmod u+w" in run
        assert "chgrp" not in run and "g+w" not in run  # the group is the socket's clients
        # udev treats a lone $ as a substitution: shell variables must be $$
        assert not re.search(r"(?<!\$)\$(?!\$)[a-z]", run)
        assert "chmod 0666" not in run and "o+w" not in run


# -- the rules run against fake sysfs trees ----------------------------------------------
#
# udevadm cannot replay events against a fake tree, so the few match keys the rule file
# uses are evaluated here as udev does (`==`/`!=`, `|` alternatives, shell globs; TEST
# relative to the device's directory) and each matching RUN is executed by /bin/sh after
# udev's own substitutions (%p, $$), with /sys pointing at the fake tree. chown gets a
# user the test may give files to instead of "wattgate", which need not exist here.

KEYS = ("ACTION", "SUBSYSTEM", "KERNEL", "DRIVER", "TEST")
_TOKEN = re.compile(r'([A-Z]+)(==|!=|\+=)"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Event:
    action: str
    subsystem: str
    devpath: str  # as in the uevent: /devices/..., /module/...
    driver: str = ""

    @property
    def kernel(self) -> str:
        return self.devpath.rsplit("/", 1)[-1]


def parsed_rules() -> list[tuple[list[tuple[str, str, str]], list[str]]]:
    out = []
    for line in rules():
        matches, runs = [], []
        for key, op, value in _TOKEN.findall(line):
            if key == "RUN":
                assert op == "+=", line
                runs.append(value)
            else:
                assert key in KEYS, f"the emulation does not know {key}: {line}"
                matches.append((key, op, value))
        out.append((matches, runs))
    return out


def _glob(value: str, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(value, alt) for alt in pattern.split("|"))


def _user() -> pwd.struct_passwd:
    """A user other than ourselves that chown may give files to: only root may, as udev
    runs the rule."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root, as udev has")
    others = [u for u in pwd.getpwall() if u.pw_uid != 0]
    if not others:
        pytest.skip("no user other than root to give files to")
    return next((u for u in others if u.pw_name == "nobody"), others[0])


def replay(root: Path, events: list[Event]) -> None:
    user = _user().pw_name
    for ev in events:
        values = {"ACTION": ev.action, "SUBSYSTEM": ev.subsystem, "KERNEL": ev.kernel,
                  "DRIVER": ev.driver}
        for matches, runs in parsed_rules():
            ok = True
            for key, op, value in matches:
                if key == "TEST":
                    hit = (root / ev.devpath.lstrip("/") / value).exists()
                else:
                    hit = _glob(values[key], value)
                ok = ok and (hit if op == "==" else not hit)
            if not ok:
                continue
            for run in runs:
                cmd = run.replace("%p", ev.devpath).replace("$$", "$")
                cmd = cmd.replace("/sys/", f"{root}/").replace("chown wattgate", f"chown {user}")
                subprocess.run(shlex.split(cmd), check=True, timeout=30)


def owned_writable(root: Path) -> set[str]:
    """Files the rule gave to the daemon's user: its own and writable by it, by no one else."""
    uid = _user().pw_uid
    out = set()
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            st = path.stat()
            if st.st_uid == uid:
                assert st.st_mode & stat.S_IWUSR, path
                assert not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path
                out.add(str(path.relative_to(root)))
    return out


def tree(board: Board, root: Path) -> Path:
    board.write(root)
    for rel in board.files:
        (root / rel).chmod(0o644)  # as sysfs makes them: writable by the owner (root) only
    return root


# scaling_setspeed: a board found under the userspace governor has its pin given back
POLICY_ATTRS = {"scaling_governor", "scaling_min_freq", "scaling_max_freq", "scaling_setspeed"}


def add_policy(b: Board, first: int, cpus: range, driver: str) -> None:
    b.policy(first, cpus, driver=driver, governor="schedutil",
             governors="ondemand performance schedutil", min_khz=408000, max_khz=2400000)


def cpu_coldplug(count: int) -> list[Event]:
    return [Event("add", "cpu", f"/devices/system/cpu/cpu{n}") for n in range(count)]


def test_cpufreq_of_a_built_in_driver_is_granted_at_coldplug(tmp_path: Path) -> None:
    b = Board()
    b.cpus(4)
    add_policy(b, 0, range(4), "intel_pstate")
    root = tree(b, tmp_path)
    replay(root, cpu_coldplug(4))
    want = {f"devices/system/cpu/cpufreq/policy0/{a}" for a in POLICY_ATTRS}
    assert owned_writable(root) == want  # the read-only ones stay


# A cpufreq driver built as a module (cpufreq-dt on Debian's arm64 kernels, which the
# RK3588, i.MX8MP and Raspberry Pi use; raspberrypi-cpufreq; acpi-cpufreq on x86) creates
# the policies after the CPUs' coldplug events have been handled. A policy is not a
# device (drivers/base/core.c dev_uevent_filter drops the policy kobject's uevent), so
# the kernel then sends only the module's "add" (after its init) and its device's "bind".
MODULAR = {
    "cpufreq-dt": [
        Event("add", "module", "/module/cpufreq_dt"),
        Event("bind", "platform", "/devices/platform/cpufreq-dt", "cpufreq-dt"),
    ],
    "cpufreq-dt, probe deferred past the module load": [
        Event("bind", "platform", "/devices/platform/cpufreq-dt", "cpufreq-dt"),
    ],
    "acpi-cpufreq": [Event("add", "module", "/module/acpi_cpufreq")],
}


@pytest.mark.parametrize("case", sorted(MODULAR))
def test_cpufreq_of_a_modular_driver_is_granted_when_it_loads(
    tmp_path: Path, case: str
) -> None:
    b = Board()
    b.cpus(8)
    root = tree(b, tmp_path)
    replay(root, cpu_coldplug(8))  # no cpufreq yet: nothing to grant
    assert owned_writable(root) == set()
    later = Board()  # the driver loads: two clusters' policies appear
    add_policy(later, 0, range(4), "cpufreq-dt")
    add_policy(later, 4, range(4, 8), "cpufreq-dt")
    tree(later, root)
    replay(root, MODULAR[case])
    want = {f"devices/system/cpu/cpufreq/policy{p}/{a}" for p in (0, 4) for a in POLICY_ATTRS}
    assert owned_writable(root) == want


DEVFREQ_ATTRS = {"governor", "min_freq", "max_freq"}
RUNTIME_PM = {"power/control", "power/autosuspend_delay_ms"}
# SoC accelerators as their devfreq "add" arrives: (device, devfreq name, extra attributes
# of the device the daemon writes). Jetson GPUs carry railgate_enable, which the daemon
# writes whenever the GPU device has one (daemon/power.py), whatever the GPU's name.
ACCELERATORS = {
    "rk3588 npu": ("devices/platform/fdab0000.npu", "fdab0000.npu", set()),
    "rk3588 mali": ("devices/platform/fb000000.gpu", "fb000000.gpu", set()),
    "orin jetpack 5": ("devices/17000000.ga10b", "17000000.ga10b", {"railgate_enable"}),
    "nano jetpack 4": ("devices/57000000.gpu", "57000000.gpu", {"railgate_enable"}),
    "orin jetpack 6": ("devices/platform/bus@0/17000000.gpu", "17000000.gpu",
                       {"railgate_enable"}),
}


@pytest.mark.parametrize("case", sorted(ACCELERATORS))
def test_devfreq_accelerator_is_granted_exactly_what_the_daemon_writes(
    tmp_path: Path, case: str
) -> None:
    device, name, extra = ACCELERATORS[case]
    b = Board()
    b.device(device, runtime_pm={"control": "auto", "autosuspend_delay_ms": 1000,
                                 "runtime_status": "suspended"})
    b.devfreq(device, name, governor="simple_ondemand",
              governors="userspace performance simple_ondemand",
              frequencies=[300000000, 600000000, 1000000000], cur_hz=300000000)
    if extra:
        b.attrs(device, {"railgate_enable": 1, "load": 0})
    root = tree(b, tmp_path)
    replay(root, [Event("add", "devfreq", f"/{device}/devfreq/{name}")])
    want = {f"{device}/devfreq/{name}/{a}" for a in DEVFREQ_ATTRS}
    want |= {f"{device}/{a}" for a in RUNTIME_PM | extra}
    assert owned_writable(root) == want


def test_cpufreq_of_a_cluster_brought_online_after_boot_is_granted(tmp_path: Path) -> None:
    """A CPU offline at boot (maxcpus=, a cluster a boot script brings up) has no policy: the
    cpufreq driver creates it when the CPU first comes online (cpufreq_online, a CPU hotplug
    callback), and the kernel then sends the CPU device's "online" uevent, not "add" or
    "change" (drivers/base/core.c device_online: KOBJ_ONLINE after the bus brought it up).
    The policy stays for later onlines, so that event is the only one to grant it on."""
    b = Board()
    b.cpus(8)
    add_policy(b, 0, range(4), "cpufreq-dt")
    root = tree(b, tmp_path)
    replay(root, cpu_coldplug(8))  # cpu4-7 offline: no policy4 yet
    later = Board()
    add_policy(later, 4, range(4, 8), "cpufreq-dt")
    tree(later, root)
    replay(root, [Event("online", "cpu", f"/devices/system/cpu/cpu{n}") for n in range(4, 8)])
    want = {f"devices/system/cpu/cpufreq/policy{p}/{a}" for p in (0, 4) for a in POLICY_ATTRS}
    assert owned_writable(root) == want
