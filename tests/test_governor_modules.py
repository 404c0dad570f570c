"""Governors built as modules: picked when a profile asks for them, loaded by the store.

scaling_available_governors and available_governors list the governors registered now;
one built as a module (CONFIG_CPU_FREQ_GOV_CONSERVATIVE=m on generic arm64 and distro
kernels) shows there only once loaded, and the kernel loads it when its name is stored
(cpufreq_parse_governor: request_module "cpufreq_<name>"; devfreq's governor_store:
try_then_request_governor, "governor_<name>"). The boards here are fake sysfs trees at
<tree>/sys beside a fake module tree at <tree>/lib/modules/<release>; the kernel's part
(loading the module, refusing what it refuses) is played by simkernel.WatchIO.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import pinnable_board
from tests.fixtures.boards import materialize
from wattgate.drivers import cpufreq, devfreq, governors
from wattgate.drivers.sysfs import AttributeInvalid, Sysfs
from wattgate.policies.profiles import Settings
from wattgate.policies.target import BoardCaps, CpuCaps, DevfreqCaps, build
from wattgate.simkernel import WatchIO

CPUFREQ = cpufreq.CPUFREQ
NPU = "class/devfreq/fdab0000.npu"
# generic arm64 (arch/arm64/configs/defconfig): these built in, conservative and powersave
# as modules
BUILT_IN = "ondemand userspace performance schedutil"


def board(tmp_path: Path, name: str = "rk3588", governors: str = BUILT_IN) -> Path:
    """Board ``name`` at tmp_path/sys with its CPU policies listing ``governors``."""
    root = materialize(name, tmp_path / "sys")
    for policy in (root / CPUFREQ).glob("policy*"):
        (policy / "scaling_available_governors").write_text(governors + "\n")
    return root


def module_tree(tmp_path: Path, modules: Iterable[str], *, missing: Iterable[str] = (),
                dep: bool = True) -> Path:
    """The running kernel's /lib/modules/<release> beside tmp_path/sys: ``modules``
    (paths below it) with their files, except ``missing``, and modules.dep naming them."""
    base = tmp_path / "lib/modules" / os.uname().release
    base.mkdir(parents=True)
    for module in modules:
        if module not in missing:
            (base / module).parent.mkdir(parents=True, exist_ok=True)
            (base / module).write_bytes(b"\x7fELF")
    if dep:
        (base / "modules.dep").write_text("".join(f"{m}:\n" for m in modules))
    return base


def governors_of(fs: Sysfs, attribute: str) -> tuple[str, ...]:
    return fs.read_words(attribute)


CONSERVATIVE = "kernel/drivers/cpufreq/cpufreq_conservative.ko.zst"
POWERSAVE = "kernel/drivers/cpufreq/cpufreq_powersave.ko.zst"


def caps_of(policies: Iterable[cpufreq.CpuPolicy]) -> BoardCaps:
    return BoardCaps(cpus=tuple(
        CpuCaps(p.name, p.path, governors=p.governors, has_governor=p.governor is not None,
                loadable=p.loadable)
        for p in policies))


def test_a_governor_built_as_a_module_is_chosen_and_its_store_loads_it(tmp_path: Path) -> None:
    """governor = "conservative" on a kernel with cpufreq_conservative.ko was noted as
    "none of governors ... in [...]" and never written; the store would have loaded it."""
    root = board(tmp_path)
    module_tree(tmp_path, [CONSERVATIVE, POWERSAVE, "kernel/drivers/cpufreq/cpufreq-dt.ko"])
    fs = Sysfs(root, WatchIO())
    policies = cpufreq.discover_policies(fs)
    assert {p.loadable for p in policies} == {("conservative", "powersave")}

    target = build(Settings(cpu_governor=("conservative",)), caps_of(policies))
    assert target.notes == ()
    assert {k: v for k, v in target.knobs.items() if k.endswith("scaling_governor")} == {
        f"{p.path}/scaling_governor": "conservative" for p in policies}

    assert cpufreq.set_governor(fs, policies[0], ["conservative"]) == "conservative"
    assert fs.read(f"{CPUFREQ}/policy0/scaling_governor") == "conservative"
    for p in policies:  # loaded: the kernel lists it for every policy from now on
        assert "conservative" in governors_of(fs, f"{p.path}/scaling_available_governors")
        assert cpufreq.read_policy(fs, p.name).loadable == ("powersave",)


def test_the_store_of_a_module_governor_is_made_not_refused(tmp_path: Path) -> None:
    """The same through the drivers' and the fake kernel's own interface: set_governor
    refused "conservative" (AttributeInvalid, "none of ... in [...]") before writing, and
    the fake kernel refused the store (EINVAL) though the kernel loads the module."""
    root = board(tmp_path)
    module_tree(tmp_path, [CONSERVATIVE])
    fs = Sysfs(root, WatchIO())
    policy = cpufreq.discover_policies(fs)[-1]
    assert cpufreq.set_governor(fs, policy, ["interactive", "conservative"]) == "conservative"
    assert fs.read(policy.attr("scaling_governor")) == "conservative"
    assert fs.write(f"{CPUFREQ}/policy0/scaling_governor", "conservative")


def test_the_first_wanted_governor_listed_or_loadable_wins(tmp_path: Path) -> None:
    """tuned's "a|b" order is the profile's: a loadable first choice beats a listed second,
    and a loadable second is taken when the first is neither."""
    root = board(tmp_path)
    module_tree(tmp_path, [CONSERVATIVE, POWERSAVE])
    caps = caps_of(cpufreq.discover_policies(Sysfs(root)))
    knob = f"{CPUFREQ}/policy0/scaling_governor"
    assert build(Settings(cpu_governor=("conservative", "schedutil")), caps).knobs[knob] \
        == "conservative"
    assert build(Settings(cpu_governor=("schedutil", "conservative")), caps).knobs[knob] \
        == "schedutil"
    assert build(Settings(cpu_governor=("interactive", "powersave")), caps).knobs[knob] \
        == "powersave"


def test_a_governor_neither_listed_nor_loadable_is_noted_and_skipped(tmp_path: Path) -> None:
    root = board(tmp_path)
    module_tree(tmp_path, [CONSERVATIVE])
    fs = Sysfs(root, WatchIO())
    policies = cpufreq.discover_policies(fs)
    target = build(Settings(cpu_governor=("interactive",)), caps_of(policies))
    assert not any(k.endswith("scaling_governor") for k in target.knobs)
    assert target.notes[0] == (
        f"policy0: none of governors ['interactive'] in {BUILT_IN.split()} "
        "nor loadable ['conservative']")
    with pytest.raises(AttributeInvalid):
        cpufreq.set_governor(fs, policies[0], ["interactive"])
    with pytest.raises(AttributeInvalid):  # the kernel: no cpufreq_interactive to load
        fs.write(f"{CPUFREQ}/policy0/scaling_governor", "interactive")
    assert fs.read(f"{CPUFREQ}/policy0/scaling_governor") == policies[0].governor


def test_without_a_module_tree_only_the_listed_governors_count(tmp_path: Path) -> None:
    """A kernel built without modules (or a tree without them): as before."""
    fs = Sysfs(board(tmp_path), WatchIO())
    policies = cpufreq.discover_policies(fs)
    assert {p.loadable for p in policies} == {()}
    target = build(Settings(cpu_governor=("conservative",)), caps_of(policies))
    assert not any(k.endswith("scaling_governor") for k in target.knobs)
    assert target.notes[0] == (
        f"policy0: none of governors ['conservative'] in {BUILT_IN.split()}")


def test_a_module_that_does_not_load_is_refused_like_any_store(tmp_path: Path) -> None:
    """modules.dep names the module but its file is gone (as a failed modprobe, a module
    refused for its signature): the store answers EINVAL, the typed error every refused
    write gives, and nothing changes."""
    root = board(tmp_path)
    module_tree(tmp_path, [CONSERVATIVE], missing=[CONSERVATIVE])
    fs = Sysfs(root, WatchIO())
    policy = cpufreq.read_policy(fs, "policy0")
    assert policy.loadable == ("conservative",)
    with pytest.raises(AttributeInvalid):
        cpufreq.set_governor(fs, policy, ["conservative"])
    assert fs.read(policy.attr("scaling_governor")) == policy.governor
    assert "conservative" not in governors_of(fs, policy.attr("scaling_available_governors"))


def test_the_governor_files_count_without_modules_dep(tmp_path: Path) -> None:
    root = board(tmp_path)
    module_tree(tmp_path, ["kernel/drivers/cpufreq/cpufreq_conservative.ko.xz"], dep=False)
    fs = Sysfs(root, WatchIO())
    policy = cpufreq.read_policy(fs, "policy0")
    assert policy.loadable == ("conservative",)
    assert cpufreq.set_governor(fs, policy, ["conservative"]) == "conservative"


def test_a_setpolicy_driver_loads_no_governor(tmp_path: Path) -> None:
    """intel_pstate (active) takes only performance and powersave: store_scaling_governor
    parses the name with cpufreq_parse_policy, no module is requested."""
    root = materialize("intel-mtl", tmp_path / "sys")
    module_tree(tmp_path, [CONSERVATIVE])
    fs = Sysfs(root, WatchIO())
    policy = cpufreq.read_policy(fs, "policy0")
    assert policy.loadable == ()
    with pytest.raises(AttributeInvalid):
        fs.write(policy.attr("scaling_governor"), "conservative")


def test_a_devfreq_governor_built_as_a_module_is_chosen_and_loaded(tmp_path: Path) -> None:
    """devfreq asks modprobe for governor_<name>, simple_ondemand's being
    governor_simpleondemand; the passive governor is immutable and never chosen."""
    root = board(tmp_path)
    (root / NPU / "available_governors").write_text("rknpu_ondemand performance\n")
    module_tree(tmp_path, [f"kernel/drivers/devfreq/governor_{name}.ko"
                           for name in ("userspace", "simpleondemand", "passive")])
    fs = Sysfs(root, WatchIO())
    dev = devfreq.read_devfreq(fs, "fdab0000.npu")
    assert dev.loadable == ("simple_ondemand", "userspace")
    caps = BoardCaps(npu=DevfreqCaps(dev.name, dev.path, governors=dev.governors,
                                     loadable=dev.loadable))
    target = build(Settings(npu_governor=("simple_ondemand",)), caps)
    assert target.knobs[f"{NPU}/governor"] == "simple_ondemand" and target.notes == ()
    noted = build(Settings(npu_governor=("passive",)), caps)
    assert f"{NPU}/governor" not in noted.knobs
    assert noted.notes == ("fdab0000.npu: none of governors ['passive'] in "
                           "['rknpu_ondemand', 'performance'] nor loadable "
                           "['simple_ondemand', 'userspace']",)

    assert devfreq.set_governor(fs, dev, ["simple_ondemand"]) == "simple_ondemand"
    assert fs.read(f"{NPU}/governor") == "simple_ondemand"
    for other in devfreq.discover_devfreq(fs):  # loaded for every device
        assert "simple_ondemand" in other.governors
    with pytest.raises(AttributeInvalid):
        fs.write(f"{NPU}/governor", "passive")


def test_a_daemon_pinned_to_a_profile_asking_for_a_module_governor_stores_it(
    start_daemon: Any, tmp_path: Path,
) -> None:
    """The power controller gives the policy what the drivers read: pinned to a profile
    whose governor is a module not yet loaded, the daemon writes it, and gives the board
    its own governor back at the stop."""
    config = pinnable_board(tmp_path, profiles={"quiet": {"cpu_governor": ["conservative"]}})
    root = config.parent / "sys"
    policy0 = root / CPUFREQ / "policy0"
    for policy in (root / CPUFREQ).glob("policy*"):
        (policy / "scaling_available_governors").write_text(BUILT_IN + "\n")
    module_tree(config.parent, [CONSERVATIVE])
    before = (policy0 / "scaling_governor").read_text()
    daemon = start_daemon(config=config)
    with daemon.connect() as client:
        client.request("profile", set="quiet")
        deadline = time.monotonic() + 30.0  # written by the power controller's writer
        while (policy0 / "scaling_governor").read_text().strip() != "conservative":
            assert time.monotonic() < deadline, (client.request("status")["power"],
                                                 daemon.log())
            time.sleep(0.05)
    assert daemon.stop() == 0, daemon.log()
    assert (policy0 / "scaling_governor").read_text() == before


def test_modules_dep_is_read_again_only_once_depmod_wrote_it(tmp_path: Path) -> None:
    """A distro kernel's modules.dep is about 1 MB, and policies are read again on the
    power tick while CPUs are offline: it is read once per version of it."""
    root = board(tmp_path)
    base = module_tree(tmp_path, [CONSERVATIVE])
    dep = base / "modules.dep"
    assert "cpufreq_conservative" in governors.kernel_modules(root)
    stamp = dep.stat().st_mtime_ns
    dep.write_text(f"{POWERSAVE}:\n".ljust(len(dep.read_text()) - 1) + "\n")  # same size
    os.utime(dep, ns=(stamp, stamp))
    assert "cpufreq_conservative" in governors.kernel_modules(root)  # not read again
    os.utime(dep, ns=(stamp + 10**9, stamp + 10**9))  # depmod ran
    assert set(governors.kernel_modules(root)) == {"cpufreq_powersave"}
