"""`wattgate bench NAME [--json] [--quick]`: run the benchmarks of the source tree's bench/.

The benchmarks are development tools: they need the test dependencies, write video files
and start daemons, so they are not part of the installed package. This module only wires
them into the CLI; it finds bench/ beside the wattgate package of a source checkout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from wattgate.cli_power import EXIT_USAGE, positive_int
from wattgate.client import ClientError
from wattgate.stop_signals import StopSignal, raised_by

NAMES = ("gate", "gate-quality", "pipeline", "idle", "footprint", "fanout")
CHECKOUT = Path(__file__).resolve().parent.parent
# what `timeout`, a CI runner cancelling a job, `kill` and a closed SSH session send
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
EXIT_FAILED = 1


def register(subparsers: Any) -> None:
    """Add the `bench` command to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "bench", help="run a benchmark (from a source checkout)",
        description="Measure wattgate against baselines in the same run; `all` writes "
                    "bench/results/latest.json and latest.md.",
    )
    parser.add_argument("name", choices=[*NAMES, "all"], help="which benchmark")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true",
                        help="tiny inputs and one repeat: checks that it runs, measures nothing")
    parser.add_argument("--repeats", type=positive_int, help="override the number of repeats")
    parser.add_argument("--out", help="directory for latest.json/latest.md (all only; "
                                      "default bench/results)")
    parser.set_defaults(func=cmd_bench)


def _import(module: str) -> Any:
    if not (CHECKOUT / "bench" / "__init__.py").is_file():
        raise SystemExit("wattgate: the benchmarks live in bench/ of a source checkout; "
                         f"none beside {CHECKOUT / 'wattgate'}")
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    return importlib.import_module(module)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.out is not None and args.name != "all":  # a usage error, as argparse's are
        print("wattgate bench: --out is where `bench all` writes latest.json and latest.md; "
              f"`bench {args.name}` writes nothing (use --json > FILE)", file=sys.stderr)
        return EXIT_USAGE
    report = _import("bench.report")
    try:
        with raised_by(STOP_SIGNALS):
            return _run(report, args)
    except StopSignal as stopped:
        print(f"wattgate bench {args.name}: stopped by {stopped}", file=sys.stderr)
        return stopped.exit_status
    except BrokenPipeError:
        raise  # stdout closed by its reader: the CLI's own business
    except (RuntimeError, OSError, ClientError) as exc:
        # A daemon that would not start or died, a file that could not be written: one
        # line (a daemon's log after it) rather than a traceback, and for a script reading
        # --json, one error object instead of the result.
        print(f"wattgate bench {args.name}: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"class": "error", "code": "bench_failed", "bench": args.name,
                              "message": str(exc)}), flush=True)
        return EXIT_FAILED


def _run(report: Any, args: argparse.Namespace) -> int:
    if args.name == "all":
        out = Path(args.out) if args.out else None
        summary: dict[str, Any] = report.run_all(args.quick, args.repeats, out)
        if args.json:
            print(json.dumps(summary))
        else:
            target = out or report.RESULTS
            print(f"{summary['targets_met']} of {summary['targets']} targets met; "
                  f"wrote {target / 'latest.json'} and {target / 'latest.md'}")
        return 0
    result: dict[str, Any] = report.run_one(args.name, args.quick, args.repeats)
    if args.json:
        print(json.dumps(result))
    else:
        print(report.markdown([result], result["machine"], [f"# wattgate bench {args.name}", ""]))
    return 0
