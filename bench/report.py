"""Markdown for benchmark results, and the `all` run that writes latest.json and latest.md.

The Markdown is for people: the machine first (numbers from another machine are not
comparable), then every target with its measured value, then one table per benchmark with
min/median/max where there were repeats. The JSON holds everything, including per-repeat
statistics and per-thread CPU, for whoever needs to dig.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable, Optional

from bench import NAMES
from bench.common import RESULTS, Json, machine

MODULES = {"gate": "bench.gate", "gate-quality": "bench.quality",
           "pipeline": "bench.pipeline", "idle": "bench.idle",
           "footprint": "bench.footprint", "fanout": "bench.fanout"}


def runner(name: str) -> Callable[..., Json]:
    run: Callable[..., Json] = importlib.import_module(MODULES[name]).run
    return run


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
    return str(value)


def _spread(stats: Optional[Json], digits: int = 3) -> str:
    """`median [min–max]` of a summary()."""
    if not stats or stats.get("median") is None:
        return "–"
    if stats.get("n", 0) <= 1:
        return _f(stats["median"], digits)
    return (f"{_f(stats['median'], digits)} [{_f(stats['min'], digits)}–"
            f"{_f(stats['max'], digits)}]")


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)
    return lines


def machine_lines(info: Json) -> list[str]:
    return [
        f"Machine: {info['cpu']}, {info['cores']} cores ({info['arch']}), "
        f"Linux {info['kernel']}; load average at start {info['load_average']}.",
        f"Python {info['python']}, numpy {info['numpy']}, OpenCV {info['opencv']}, "
        f"{info['tflite_runtime']}; wattgate at {info.get('code') or 'unknown commit'}.",
    ]


def targets_table(results: Iterable[Json]) -> list[str]:
    rows = []
    for result in results:
        for t in result.get("targets", []):
            met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
            if t.get("note"):
                met += f" ({t['note']})"
            rows.append((t["name"], _f(t["value"], 4), f"{t['op']} {_f(t['limit'], 4)}", met))
    return _table(("target", "measured", "target", ""), rows)


def gate_md(r: Json) -> list[str]:
    lines = [f"### gate: CPU ms a frame, median of {r['repeats']} repeats [min–max]", ""]
    rows = []
    for row in r["rows"]:
        s = row["stats"]
        copy = _spread(s["copy"])
        if "decode" in s:
            copy += f" (full decode {_spread(s['decode'])})"
        rows.append((row["resolution"], row["input"], _spread(s["ours"]), copy,
                     _spread(s["mog2"], 2), _spread(s["frigate"]), _f(row["ours_vs_copy"], 2),
                     _f(row["ours_vs_mog2"], 3), _f(row["ours_vs_frigate"], 2)))
    lines += _table(("resolution", "input", "ours", "copy", "MOG2", "Frigate-style",
                     "ours/copy", "ours/MOG2", "ours/Frigate"), rows)
    return lines


def quality_md(r: Json) -> list[str]:
    lines = [f"### gate-quality: recall / recall on any frame / idle_skip at "
             f"{r['resolution']}, {r['fps']:g} fps, {r['repeats']} "
             f"{'pass' if r['repeats'] == 1 else 'passes'}, the scenes are deterministic "
             f"(cooldown {r['rule']['cooldown_s']:g} s, heartbeat {r['rule']['heartbeat_s']:g}"
             f" s for all three)", "",
             "recall (the target): events inferred on one of their first "
             f"{r['rule']['catch_frames']} frames; recall on any frame, looser and for "
             "information: events with any frame inferred, however late.", ""]
    rows = []
    for row in r["scenes"]:
        cells: list[Any] = [row["scene"], row["events"], row["ours"]["idle_frames"]]
        for key in ("ours", "mog2", "frigate"):
            score = row[key]
            cells.append(f"{score['recall']:.2f} / {score['recall_any_frame']:.2f} / "
                         f"{score['idle_skip']:.3f}")
        rows.append(cells)
    lines += _table(("scene", "events", "idle frames", "ours", "MOG2", "Frigate-style"), rows)
    return lines


def pipeline_md(r: Json) -> list[str]:
    fps, cpu = r["stats_fps"], r["cpu_ms_per_frame"]
    names = (("bare invoke loop", "bare"), ("bare + minimal preprocess", "bare_prep"),
             ("wattgate Model.infer", "model"), ("daemon, realtime = false", "daemon"))
    lines = [f"### pipeline: {r['source']}, {r['model']}, {r['threads']} thread, "
             f"{r['repeats']} repeats", ""]
    # A series without a sample is left out of both (bench/pipeline.py): shown as "–".
    lines += _table(("loop", "fps median [min–max]", "CPU ms a frame (all threads)"),
                    ((label, _spread(fps.get(key), 1), _spread(cpu.get(key), 3))
                     for label, key in names))
    threads = r.get("thread_cpu_ms", {}).get("daemon", {})
    lines += ["", f"daemon/bare {_f(r['daemon_vs_bare'], 3)} (CPU-bound estimate "
              f"{_f(r.get('cpu_bound_ratio'), 3)}), Model.infer/bare "
              f"{_f(r['model_vs_bare'], 3)}, daemon/Model.infer {_f(r['daemon_vs_model'], 3)}.",
              f"Added latency at 30 fps ({r['latency_samples']} results): p50 "
              f"{_f(r['p50_added_latency_ms'])} ms, p99 {_f(r['p99_added_latency_ms'])} ms "
              f"pooled over the repeats; p99 of each repeat, median [min–max], "
              f"{_spread(r.get('p99_added_per_repeat_ms'))} ms; inside the daemon p50 "
              f"{_f(r['p50_daemon_added_ms'])}, p99 {_f(r['p99_daemon_added_ms'])}; "
              f"at saturation p50 "
              f"{_f(r['p50_added_latency_ms_saturated'])}, p99 "
              f"{_f(r['p99_added_latency_ms_saturated'])} ms.",
              f"Daemon CPU ms, median [min–max]: inference thread {_spread(threads.get('infer'))}"
              f" a result, capture thread {_spread(threads.get('capture'))} a frame, event loop "
              f"{_spread(threads.get('loop'))} a result."]
    larger = r.get("larger_model")
    if larger:
        lf, lc = larger["stats_fps"], larger["cpu_ms_per_frame"]
        lt = larger["thread_cpu_ms"].get("daemon", {})
        lines.append(
            f"Larger model ({larger['model']}): bare "
            f"{_spread(lf.get('bare'), 1)} fps ({_spread(lc.get('bare'))} CPU ms), Model.infer "
            f"{_spread(lf.get('model'), 1)}, daemon {_spread(lf.get('daemon'), 1)} "
            f"(inference thread {_spread(lt.get('infer'))} CPU ms a result): daemon/bare "
            f"{_f(larger['daemon_vs_bare'], 3)}, CPU-bound estimate "
            f"{_f(larger.get('cpu_bound_ratio'), 3)}.")
    stages = r.get("model_stages_cpu_ms")
    if stages:
        lines.append("Model.infer stages, CPU ms a frame (prepare runs on the daemon's capture "
                     "thread, run on its inference thread): " + ", ".join(
            f"{name} {_f(value, 3)}" for name, value in stages.items()) + ".")
    return lines


def idle_md(r: Json) -> list[str]:
    return [f"### idle: {r['scene']}, {r['repeats']} windows of {r['window_s']:g} s", "",
            f"cpu_cores {_spread(r['stats'], 4)}; of which the synthetic source's render "
            f"{_f(r['source_cores'], 4)} ({_f(r['render_ms'])} ms a frame) and the gate "
            f"{_f(r['gate_cores'], 4)} ({_f(r['gate_ms'])} ms a frame), measured in this "
            f"process; without the source {_f(r['cpu_cores_without_source'], 4)}. "
            f"{r['frames']} frames, {r['inferred']} inferred (heartbeats)."]


def footprint_md(r: Json) -> list[str]:
    s = r["stats"]
    return [f"### footprint: {r['scene']}, {r['frames']} frames, {r['repeats']} starts", "",
            *_table(("ready_s", "rss_mb at READY", "RSS at the first frames",
                     f"RSS after {r['frames']} frames", "rss_growth_mb",
                     "growth after warm-up"),
                    [(_spread(s["ready_s"]), _spread(s["rss_mb"], 1),
                      _spread(s.get("rss_first_frames_mb"), 1),
                      _spread(s["rss_after_mb"], 1), _spread(s["rss_growth_mb"], 2),
                      _spread(s["rss_growth_after_warmup_mb"], 2))])]


def fanout_md(r: Json) -> list[str]:
    out = [f"### fanout: {r['source']}, {r['repeats']} repeats of {r['window_s']:g} s", "",
           *_fanout_table(r["rows"])]
    camera = r.get("camera_rate")
    if camera:
        out += ["", f"At camera rate, for information: {camera['source']}, "
                    f"{camera['repeats']} repeats of {camera['window_s']:g} s", "",
                *_fanout_table(camera["rows"])]
    larger = r.get("larger_model")
    if larger and larger["rows"]:
        out += ["", f"With a larger model, for information: {larger['model']}, "
                    f"{larger['source']}, {larger['repeats']} repeats of "
                    f"{larger['window_s']:g} s", "",
                *_fanout_table(larger["rows"])]
    return out


def _fanout_table(rows: list[Json]) -> list[str]:
    cells = [(row["subscribers"], "yes" if row["stalled"] else "",
              _spread(row["stats"]["fps"], 1), _f(row["fps_vs_none"], 3),
              _f(row["p50_delay_ms"]), _spread(row["stats"]["p99_delay_ms"], 2),
              _vs_plain(row), row["received"], row["dropped"], _f(row["loop_cpu_cores"]),
              _f(row.get("loop_cpu_ms_per_result")), _f(row["reader_cpu_cores"]))
             for row in rows]
    return _table(("subscribers", "+1 stalled", "fps", "vs none", "p50 delay ms",
                   "p99 delay ms", "p99 vs plain", "received", "dropped", "loop CPU cores",
                   "loop CPU ms a result", "reader CPU cores"), cells)


def _vs_plain(row: Json) -> str:
    """A stalled row's p99 delay against its plain row's: `+ms (ratio)`; blank otherwise."""
    if "p99_delay_vs_plain_ms" not in row:
        return ""
    added = row["p99_delay_vs_plain_ms"]
    shown = "–" if added is None else f"{added:+.2f} ms"
    return f"{shown} ({_f(row.get('p99_delay_vs_plain'), 2)}x)"


SECTIONS: dict[str, Callable[[Json], list[str]]] = {
    "gate": gate_md, "gate-quality": quality_md, "pipeline": pipeline_md, "idle": idle_md,
    "footprint": footprint_md, "fanout": fanout_md,
}


def markdown(results: list[Json], info: Json, header: Optional[list[str]] = None) -> str:
    lines = ["# wattgate benchmarks", ""] if header is None else header
    lines += [*machine_lines(info), "",
              "Ratios compare with a baseline measured in the same run; medians unless "
              "stated, [min–max] over the repeats.", "", "## Targets", "",
              *targets_table(results), "", "## Results"]
    for result in results:
        lines += ["", *SECTIONS[result["bench"]](result)]
    return "\n".join(lines) + "\n"


def run_one(name: str, quick: bool = False, repeats: Optional[int] = None) -> Json:
    """One benchmark, with a line on stderr before and after: most run for minutes, and
    stdout is kept for the result."""
    t0 = time.monotonic()
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    result = runner(name)(quick=quick, repeats=repeats)
    print(f"bench: {name} done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    return result


def run_all(quick: bool = False, repeats: Optional[int] = None,
            out: Optional[Path] = None, names: Iterable[str] = NAMES) -> Json:
    """Run the benchmarks in order; write latest.json and latest.md into `out`."""
    out = RESULTS if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    started = time.time()
    results = []
    for name in names:
        results.append(run_one(name, quick, repeats))
    when = datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
    summary: Json = {
        "bench": "all",
        "machine": info,
        "started": when.isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "quick": quick,
        "results": results,
        "targets_met": sum(t["met"] is True for r in results for t in r.get("targets", [])),
        "targets": sum(len(r.get("targets", [])) for r in results),
    }
    header = ["# wattgate benchmarks", "",
              f"Run {summary['started']} in {summary['duration_s']:g} s"
              + (" (--quick: tiny inputs, not a measurement)" if quick else "")
              + f"; {summary['targets_met']} of {summary['targets']} targets met.", ""]
    # Both texts first: a run whose Markdown fails must not leave its JSON beside the
    # previous run's Markdown.
    text = markdown(results, info, header)
    _replace(out / "latest.json", json.dumps(summary, indent=1) + "\n")
    _replace(out / "latest.md", text)
    return summary


def _replace(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it), so Ctrl-C
    during the write never leaves half a latest.json for the next reader."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
