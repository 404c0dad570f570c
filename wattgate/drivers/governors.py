"""Governors a kernel can take: the ones registered now, and those built as modules.

cpufreq's scaling_available_governors and devfreq's available_governors list only the
governors registered now. One built as a module (CONFIG_CPU_FREQ_GOV_CONSERVATIVE=m on
generic arm64 and distro kernels) is loaded by the store of its name (cpufreq.c
cpufreq_parse_governor: request_module "cpufreq_<name>"; devfreq.c governor_store:
try_then_request_governor, "governor_<name>"), so the modules modprobe can load count as
offered too. Shared by cpufreq.py and devfreq.py, which each know their modules' names.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

from wattgate.drivers.sysfs import AttributeInvalid, AttributeMissing, Writer

# The running kernel's modules, beside the sysfs root as /lib is beside /sys: a fake tree
# lays them out as <tree>/sys and <tree>/lib/modules/<release>.
MODULES = "lib/modules"
MODULE_SUFFIX = re.compile(r"\.ko(\.(xz|zst|gz))?$")
# Where the governors' modules are built (drivers/cpufreq/Makefile, drivers/devfreq/Makefile):
# looked at when depmod wrote no modules.dep.
GOVERNOR_MODULE_DIRS = ("kernel/drivers/cpufreq", "kernel/drivers/devfreq")


# The userspace governor holds a frequency no other governor keeps, in an attribute beside
# the governor's store: cpufreq's scaling_setspeed, devfreq's userspace/set_freq (a group
# there only while the governor is on). Started again, it pins whatever frequency the
# device runs at then (cpufreq_userspace.c cpufreq_userspace_policy_start: setspeed =
# policy->cur; governor_userspace.c keeps the current freq until set_freq is stored).
USERSPACE = "userspace"
PINNED_FREQUENCY = {"scaling_governor": "scaling_setspeed", "governor": "userspace/set_freq"}


def pinned_frequency(governor_attribute: str) -> Optional[str]:
    """The attribute where the userspace governor of the policy or device whose governor
    store is ``governor_attribute`` keeps its pinned frequency; None for any other
    attribute."""
    parent, _, name = governor_attribute.rpartition("/")
    pinned = PINNED_FREQUENCY.get(name)
    return f"{parent}/{pinned}" if parent and pinned else None


def module_dir(sysfs_root: Path, release: Optional[str] = None) -> Path:
    """/lib/modules/$(uname -r) of the system whose sysfs is at ``sysfs_root``."""
    return Path(os.path.abspath(sysfs_root)).parent / MODULES / (release or os.uname().release)


# modules.dep of a distro kernel is about 1 MB: read once per version of it, not at every
# policy read (a policy recheck runs on the power tick while CPUs are offline: nosmt)
_modules_read: dict[Path, tuple[tuple[int, int], dict[str, Path]]] = {}


def kernel_modules(sysfs_root: Path, release: Optional[str] = None) -> Mapping[str, Path]:
    """The modules modprobe can load for the running kernel: name -> module file.

    modprobe finds a module by name in modules.dep (written by depmod); without one, the
    .ko files of the governors' directories are taken. Names are the file names without
    .ko and its compression suffix. {} when there is no module tree (a kernel built
    without modules, or a fake tree without one). modules.dep is read again only when
    depmod has written it since (its mtime or size changed).
    """
    base = module_dir(sysfs_root, release)
    dep = base / "modules.dep"
    try:
        seen = dep.stat()
        version = (seen.st_mtime_ns, seen.st_size)
        cached = _modules_read.get(dep)
        if cached is not None and cached[0] == version:
            return cached[1]
        text = dep.read_text(errors="replace")
    except OSError:
        return _governor_module_files(base)
    modules: dict[str, Path] = {}
    for line in text.splitlines():
        module = line.partition(":")[0].strip()
        if MODULE_SUFFIX.search(module):
            modules.setdefault(MODULE_SUFFIX.sub("", module.rsplit("/", 1)[-1]), base / module)
    _modules_read[dep] = (version, modules)
    return modules


def _governor_module_files(base: Path) -> dict[str, Path]:
    """The .ko files of the governors' directories under ``base``, for a tree without
    modules.dep."""
    files: list[Path] = []
    for directory in GOVERNOR_MODULE_DIRS:
        try:
            files.extend(entry for entry in (base / directory).iterdir())
        except OSError:
            continue
    return {MODULE_SUFFIX.sub("", f.name): f for f in files if MODULE_SUFFIX.search(f.name)}


def first_available(wanted: Sequence[str], listed: Sequence[str],
                    loadable: Sequence[str]) -> Optional[str]:
    """The first of ``wanted`` that is listed or loadable (tuned's ``a|b|c`` rule)."""
    return next((g for g in wanted if g in listed or g in loadable), None)


def store_governor(w: Writer, attribute: str, current: Optional[str], listed: Sequence[str],
                   loadable: Sequence[str], wanted: Sequence[str]) -> str:
    """Write the first available governor of ``wanted`` to ``attribute``; returns it.

    AttributeMissing when the device has no such attribute (``current`` None), and
    AttributeInvalid when none of ``wanted`` is listed or loadable, or when the kernel
    refuses the store (a module that would not load)."""
    if current is None:
        raise AttributeMissing(attribute, w.fs.path(attribute), errno.ENOENT, "write")
    chosen = first_available(wanted, listed, loadable)
    if chosen is None:
        raise AttributeInvalid(
            attribute, w.fs.path(attribute), errno.EINVAL, "write",
            f"none of {list(wanted)} in {list(listed)} nor loadable {list(loadable)}",
        )
    w.write(attribute, chosen)
    return chosen
