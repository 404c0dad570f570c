"""Which boot this is: the kernel's random boot id, new at every boot.

The event log keeps it to tell an age measured on this boot's clock from one measured on
an earlier boot's; the sysfs journal keeps it because a reboot resets sysfs, so originals
journaled on an earlier boot are no longer the board's values to give back.
"""

from __future__ import annotations

from typing import Optional

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"  # a new random UUID at every boot


def boot_id() -> Optional[str]:
    """This boot's id; None where the kernel gives none (no /proc)."""
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as f:
            return f.read().strip() or None
    except (OSError, ValueError):
        return None
