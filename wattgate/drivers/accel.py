"""Which device is the NPU and which the GPU, per board.

Boards name them differently, so identification goes by devfreq name, by the
driver bound to a device, or by an explicit path from the config
(``power.npu`` / ``power.gpu``), which always wins:

* Rockchip BSP: devfreq ``fdab0000.npu`` (rknpu), GPU ``fb000000.gpu`` (REFERENCE.md).
* Jetson: GPU devfreq named after the GPU (``17000000.ga10b``, ``gv11b``, ``gp10b``).
* i.MX8MP: the Vivante ``galcore`` platform driver drives GPU and NPU (VIP) cores.
* Intel: ``intel_vpu`` under ``class/accel/accel*/device``; any accel-class device
  is an NPU (the mainline RK3588 ``rocket`` driver registers there too).
* PCIe accelerators: Hailo (driver ``hailo``) and Coral (driver ``apex``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from typing import Optional

from wattgate.drivers.devfreq import DEVFREQ
from wattgate.drivers.sysfs import Sysfs

NPU_PATTERNS = ("*.npu", "*rknpu*", "*npu*")
GPU_PATTERNS = ("*ga10b*", "*gv11b*", "*gp10b*", "*.gpu", "*gpu*")
PCI_NPU_DRIVERS = {"hailo": "hailo", "apex": "apex"}


@dataclass(frozen=True)
class Accelerator:
    kind: str  # "npu" or "gpu"
    name: str
    vendor: str
    device: str  # device directory relative to the sysfs root
    devfreq: Optional[str]  # name under class/devfreq, when it has one
    source: str  # "devfreq-name", "driver", "accel-class" or "config"

    def to_dict(self) -> dict[str, Optional[str]]:
        return asdict(self)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name.lower(), p) for p in patterns)


def devfreq_of(fs: Sysfs, device: str) -> Optional[str]:
    """Name of the devfreq instance a device registered, if any."""
    names = fs.listdir(f"{device}/devfreq")
    return names[0] if names else None


def _vendor_of(fs: Sysfs, device: str, name: str) -> str:
    driver = (fs.link_name(f"{device}/driver") or "").lower()
    lowered = name.lower()
    if "rknpu" in driver or lowered.endswith(".npu"):
        return "rknpu"
    if any(tag in lowered for tag in ("ga10b", "gv11b", "gp10b")):
        return "nvgpu"
    if "mali" in driver or "panthor" in driver or "panfrost" in driver:
        return "mali"
    return driver or "unknown"


def _from_devfreq(fs: Sysfs) -> list[Accelerator]:
    found: list[Accelerator] = []
    for name in fs.listdir(DEVFREQ):
        kind = (
            "npu"
            if _matches(name, NPU_PATTERNS)
            else "gpu"
            if _matches(name, GPU_PATTERNS)
            else None
        )
        if kind is None:
            continue
        real = fs.resolve(f"{DEVFREQ}/{name}")
        device = real.rsplit("/devfreq/", 1)[0] if "/devfreq/" in real else real
        found.append(
            Accelerator(kind, name, _vendor_of(fs, device, name), device, name, "devfreq-name")
        )
    return found


def _from_accel_class(fs: Sysfs) -> list[Accelerator]:
    found = []
    for name in fs.listdir("class/accel"):
        if not name.startswith("accel"):
            continue
        device = fs.resolve(f"class/accel/{name}/device")
        vendor = fs.link_name(f"{device}/driver") or "unknown"
        found.append(
            Accelerator("npu", name, vendor, device, devfreq_of(fs, device), "accel-class")
        )
    return found


def _from_drivers(fs: Sysfs) -> list[Accelerator]:
    found = []
    for driver, vendor in PCI_NPU_DRIVERS.items():
        for entry in fs.listdir(f"bus/pci/drivers/{driver}"):
            if ":" not in entry:
                continue  # bind, unbind, new_id, module ...
            device = fs.resolve(f"bus/pci/drivers/{driver}/{entry}")
            found.append(
                Accelerator("npu", entry, vendor, device, devfreq_of(fs, device), "driver")
            )
    galcore = [e for e in fs.listdir("bus/platform/drivers/galcore") if "." in e]
    # On i.MX8MP the NPU (VIP8000, "vipsi") is one of galcore's cores.
    has_vip = any("vipsi" in n for n in fs.listdir("bus/platform/devices"))
    for entry in galcore:
        device = fs.resolve(f"bus/platform/drivers/galcore/{entry}")
        kind = "npu" if has_vip else "gpu"
        found.append(Accelerator(kind, entry, "galcore", device, devfreq_of(fs, device), "driver"))
    return found


def resolve_configured(fs: Sysfs, value: str, kind: str) -> Optional[Accelerator]:
    """Resolve ``power.npu``/``power.gpu``: a devfreq name, an accel device name
    (``accel0``) or a sysfs path.

    An absolute path under /sys is taken relative to the configured root, so the
    same config works against a fake tree. A class device (``/sys/class/accel/accel0``)
    stands for its parent, as in detection: the parent has the driver and power/control,
    and taking the class device instead dropped the NPU's runtime PM without a word.
    """
    text = value.strip()
    if not text:
        return None
    if "/" not in text and fs.exists(f"{DEVFREQ}/{text}"):
        rel = f"{DEVFREQ}/{text}"
    elif "/" not in text and fs.exists(f"class/accel/{text}"):
        rel = f"class/accel/{text}"
    else:
        rel = fs.configured(text)
        if not fs.exists(rel):
            return None
    real = fs.resolve(rel)
    if "/devfreq/" in real:
        device = real.rsplit("/devfreq/", 1)[0]
        devfreq: Optional[str] = real.rsplit("/", 1)[1]
    else:
        # a class device links its parent as `device`; a PCI device's `device` is a file
        if fs.link_name(f"{real}/device") is not None:
            real = fs.resolve(f"{real}/device")
        device = real
        devfreq = devfreq_of(fs, device)
    name = devfreq or device.rsplit("/", 1)[-1]
    return Accelerator(kind, name, _vendor_of(fs, device, name), device, devfreq, "config")


def find_accelerators(
    fs: Sysfs, npu: Optional[str] = None, gpu: Optional[str] = None
) -> list[Accelerator]:
    """NPUs first, then GPUs; a configured path replaces detection for its kind."""
    detected = _from_accel_class(fs) + _from_drivers(fs) + _from_devfreq(fs)
    result: list[Accelerator] = []
    seen: set[str] = set()
    for kind, override in (("npu", npu), ("gpu", gpu)):
        if override:
            acc = resolve_configured(fs, override, kind)
            candidates = [acc] if acc else []
        else:
            candidates = [a for a in detected if a.kind == kind]
        for acc in candidates:
            if acc.device not in seen:
                seen.add(acc.device)
                result.append(acc)
    return result


def unresolved(
    fs: Sysfs, npu: Optional[str] = None, gpu: Optional[str] = None
) -> list[tuple[str, str]]:
    """``(key, message)`` for each of ``power.npu``/``power.gpu`` that names no device.

    Such a value still replaces detection for its kind, so that accelerator is not
    driven at all: said aloud, with what the board offers to name instead, since a typo
    otherwise turned its control off in silence.
    """
    found: list[tuple[str, str]] = []
    for kind, value in (("npu", npu), ("gpu", gpu)):
        if not value or resolve_configured(fs, value, kind) is not None:
            continue
        detected = find_accelerators(fs)
        accels = ", ".join(f"{a.name} ({a.kind}, {a.device})" for a in detected) or "none"
        names = ", ".join(fs.listdir(DEVFREQ)) or "none"
        found.append((f"power.{kind}", (
            f"power.{kind} = {value!r} names no device under {fs.root}, so no {kind.upper()} "
            f"is driven; accelerators found: {accels}; devfreq devices: {names}")))
    return found


def find_npu(fs: Sysfs, npu: Optional[str] = None) -> Optional[Accelerator]:
    for acc in find_accelerators(fs, npu=npu):
        if acc.kind == "npu":
            return acc
    return None


def find_gpu(fs: Sysfs, gpu: Optional[str] = None) -> Optional[Accelerator]:
    for acc in find_accelerators(fs, gpu=gpu):
        if acc.kind == "gpu":
            return acc
    return None
