"""wattgate's benchmarks: each one measures our code against a baseline in the same run.

The machine they run on is shared and noisy, so absolute numbers mean little: every
benchmark interleaves its candidates, repeats, reports min/median/max, and states its
targets as ratios against a baseline measured in the same process and the same minute.
`wattgate bench NAME` runs one (`wattgate.bench`), `make bench` runs them all and writes
bench/results/latest.json and latest.md (see bench/results/README.md).
"""

from __future__ import annotations

NAMES = ("gate", "gate-quality", "pipeline", "idle", "footprint", "fanout")
