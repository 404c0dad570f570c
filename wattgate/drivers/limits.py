"""A frequency floor and ceiling: snapped to the levels a device lists, written in an order
the kernel takes. Shared by cpufreq.py (scaling_min_freq/scaling_max_freq, kHz) and
devfreq.py (min_freq/max_freq, Hz), whose rules are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

from wattgate.drivers.sysfs import Writer


def snap(table: Sequence[int], value: int, *, upward: bool) -> int:
    """`value` snapped to a listed level of the ascending `table` (or as it is when the
    driver lists none): a floor rounds up, a ceiling down, so neither is ever looser than
    asked; past either end, the end."""
    if not table:
        return value
    if upward:
        above = [f for f in table if f >= value]
        return above[0] if above else table[-1]
    below = [f for f in table if f <= value]
    return below[-1] if below else table[0]


def write_limits(
    w: Writer, attr: Callable[[str], str], names: tuple[str, str],
    floor: Optional[int], ceiling: Optional[int], current_ceiling: Optional[int],
) -> tuple[Optional[int], Optional[int]]:
    """Write the floor and ceiling (already snapped) to the attributes `names` (min, max);
    returns the values written. A floor above the ceiling is lowered to it. When the floor
    rises above the ceiling in force, the ceiling goes first: a transient min > max is
    refused with EINVAL by older kernels. Always written, even when the file shows the value:
    it may show a thermal cap, not the request."""
    if floor is not None and ceiling is not None and floor > ceiling:
        floor = ceiling
    writes: list[tuple[str, int]] = []
    if floor is not None:
        writes.append((names[0], floor))
    if ceiling is not None:
        writes.append((names[1], ceiling))
    if floor is not None and current_ceiling is not None and floor > current_ceiling:
        writes.reverse()
    for name, value in writes:
        w.write(attr(name), str(value), always=True)
    return floor, ceiling
