"""The power subcommands of `wattgate`: `probe`, `simulate` and `restore`.

Kept apart from cli.py so the main command stays small; cli.py calls ``register`` on its
subparsers. Heavy imports (OpenCV, the interpreter) happen inside the commands.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from wattgate.config import (
    EXIT_CONFIG,
    Config,
    ConfigError,
    config_path,
    load_config,
    report_config_error,
)
from wattgate.stop_signals import StopSignal, raised_by

if TYPE_CHECKING:
    from wattgate.daemon.pidlock import LockHeld

EXIT_USAGE = 2
EXIT_NO_MODEL = 69  # EX_UNAVAILABLE: what `run` exits with for a model it cannot load
EXIT_NOT_RESTORED = 1  # some originals could not be written back (or the journal read, or used)
# EX_TEMPFAIL: a running daemon holds the journal, or drives the board (power.sysfs_root);
# once it has stopped, a retry can restore
EXIT_HELD = 75
# EX_NOPERM: this user may not look in power.journal_dir, or read its journal or lock, or
# open power.sysfs_root to lock it
EXIT_NO_PERMISSION = 77


def _sysfs_root(value: str) -> str:
    """A --sysfs-root that exists. An empty one fell back to the real /sys, and a mistyped
    one was reported as a machine with nothing to steer, exit 0."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path")
    if not os.path.isdir(value):
        raise argparse.ArgumentTypeError(f"not a directory: {value!r}")
    return value


def positive_number(value: str) -> float:
    """An argparse type for a time or duration: finite and above 0. NaN, infinity, 0 or a
    negative --model-ms made simulate print a report of an impossible model (and NaN,
    which is not JSON, in --json); such a --duration never ended or ended at once."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {value}")
    return number


def positive_int(value: str) -> int:
    """An argparse type for a count (--count, --repeats): 0 or less is bad usage (exit 2),
    as a word is, not something found out once the command runs."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {number}")
    return number


def cmd_probe(args: argparse.Namespace) -> int:
    from wattgate.drivers.inventory import CameraSurvey, format_inventory, probe, survey_cameras

    npu = gpu = None
    devices: tuple[str, ...] = ()
    root = args.sysfs_root
    if args.config is not None:
        try:
            cfg = load_config(config_path(args.config))
        except ConfigError as exc:
            return report_config_error(exc)
        npu, gpu = cfg.power.npu, cfg.power.gpu
        devices = tuple(cfg.power.runtime_pm_devices)
        if root is None and not os.path.isdir(cfg.power.sysfs_root):
            # as for --sysfs-root: a mistyped root showed a machine with nothing to steer
            return report_config_error(ConfigError(args.config, [
                f"power.sysfs_root: got {cfg.power.sysfs_root!r}; not a directory"]))
        root = root or cfg.power.sysfs_root
    root = root or "/sys"
    # cameras are no files below a fake root: listed (as "auto" finds them) on /sys only
    cameras = survey_cameras() if root == "/sys" else CameraSurvey([], None)
    inventory = probe(root, npu=npu, gpu=gpu, runtime_pm_devices=devices,
                      cameras=cameras.cameras, udev_database=cameras.udev_database)
    if args.json:
        print(inventory.to_json())
    else:
        print(format_inventory(inventory), end="")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Its SIGTERM (`timeout`, systemd) is a clean exit 143, as its SIGINT is 130: the
    default action ended the process at once and left a /tmp/wattgate-sim-* (the fake
    board and journal, about 124 KiB) behind."""
    try:
        with raised_by((signal.SIGTERM,)):
            return _simulate(args)
    except StopSignal as stopped:
        return stopped.exit_status


def _simulate(args: argparse.Namespace) -> int:
    from wattgate.simulate import (
        NoModel,
        SimulateError,
        format_report,
        scene_footage,
        simulate,
        video_footage,
    )

    if (args.scene is None) == (args.video is None):
        print("wattgate simulate: give --scene NAME, or --video FILE with --labels FILE",
              file=sys.stderr)
        return EXIT_USAGE
    if args.video is not None and args.labels is None:
        print("wattgate simulate: --video needs --labels FILE", file=sys.stderr)
        return EXIT_USAGE
    if args.scene is not None and args.labels is not None:  # a scene has its own events
        print("wattgate simulate: --labels goes with --video; a --scene has its own events",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = load_config(config_path(args.config)) if args.config is not None else None
    except ConfigError as exc:
        return report_config_error(exc)
    try:
        footage = (scene_footage(args.scene) if args.scene is not None
                   else video_footage(Path(args.video), Path(args.labels)))
        report = simulate(args.board, footage, cfg, args.profile, args.model_ms)
    except NoModel as exc:
        print(f"wattgate simulate: {exc}", file=sys.stderr)
        return EXIT_NO_MODEL
    except SimulateError as exc:
        print(f"wattgate simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(report) if args.json else format_report(report))  # one line
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Give back the originals a daemon killed mid-run (or stopped after a crash with
    Restart= exhausted) left in its journal, without starting it: systemd runs this as
    ExecStopPost=, and no restart follows a stop. The restore is the daemon's own at start
    (rollback.take_over), so what cannot be written stays in the journal for the next try.
    A live daemon's journal lock makes it touch nothing, since undoing the settings of a
    running daemon would break the promise the other way round; so does a live daemon's
    lock on power.sysfs_root (PowerController._lock_board), taken first as the daemon
    takes it: a stale journal of another config, written back under a daemon that drives
    the board, would stay, since the daemon writes a knob only when its wanted value
    changes. The originals go back under the root the journal recorded: when that is not
    power.sysfs_root (changed since), take_over locks it too, and a live daemon there is
    the same exit 75 with nothing touched.

    Journals set aside as unusable (``<journal>.corrupt``, ``.corrupt.N``) are named on
    every run, with how to read them, and the exit is 1 while one is left: none of their
    originals were written back, so the board is not known to be restored, and exit 0 or
    "nothing to restore" would say it is. Removing them, once read and whatever the board
    still needed written back by hand, is how the operator says so. The unit's
    ExecStopPost= runs this with "-", so the 1 is in the log and not the unit's result."""
    from wattgate.daemon.pidlock import DirectoryLock, LockHeld
    from wattgate.daemon.rollback import (
        JOURNAL_NAME,
        LOCK_NAME,
        JournalHeld,
        set_aside_journals,
        take_over,
    )
    from wattgate.drivers.sysfs import Sysfs

    # The restore's errors (each attribute refused and why, a journal set aside) are its
    # report on stderr, once: printed here as well, they came out twice through logging's
    # last resort. Its warnings only repeat what stdout says.
    errors = logging.StreamHandler(sys.stderr)
    errors.setLevel(logging.ERROR)
    errors.setFormatter(logging.Formatter("wattgate restore: %(message)s"))
    logging.getLogger("wattgate").addHandler(errors)

    try:
        cfg = load_config(config_path(args.config))
    except ConfigError as exc:
        return report_config_error(exc)
    directory = Path(cfg.power.journal_dir)
    earlier_exit, earlier_restored = _restore_earlier_journals(cfg, directory)
    if earlier_exit == EXIT_HELD:
        return earlier_exit
    journal_file = directory / JOURNAL_NAME
    try:
        journaled = journal_file.exists()
        not_a_directory = not journaled and os.path.lexists(directory) and not directory.is_dir()
    except OSError as exc:  # a journal_dir this user may not search (Python 3.11 raises)
        return _not_restored(exc, f"cannot look in power.journal_dir {directory}")
    if not_a_directory:  # "nothing to restore" would hide that no daemon can journal there
        print(f"wattgate restore: power.journal_dir {directory} is not a directory: no daemon "
              "can keep its journal there, and its power settings are not written; nothing "
              "restored", file=sys.stderr)
        return EXIT_CONFIG
    if not journaled and not os.path.lexists(directory / LOCK_NAME):
        # No daemon has used this directory (it locks before it journals): nothing to
        # restore, and nothing to create, so a lock file made by root cannot shut out the
        # daemon's user later. A lock that is a broken symbolic link is there (lexists):
        # take_over names it and its target, as the daemon's start does, rather than call
        # a journal_dir the daemon cannot lock one with nothing wrong.
        if _report_set_aside(set_aside_journals(directory)):
            return EXIT_NOT_RESTORED
        if not earlier_restored:
            print("nothing to restore")
        return earlier_exit or 0
    # A lock file is made only for a journal that needs one (see above).
    create = journaled and os.access(directory, os.W_OK | os.X_OK)
    root = cfg.power.sysfs_root
    board = DirectoryLock(root)
    try:
        board.acquire()
    except LockHeld as held:
        return _board_driven(root, held)
    except FileNotFoundError:
        pass  # no daemon can drive a root that is not there; take_over says what is missing
    except OSError as exc:
        return _not_restored(exc, f"cannot lock power.sysfs_root {root}")
    try:
        lock, journal, report = take_over(directory, Sysfs(root), create=create)
    except JournalHeld as exc:
        print(f"wattgate restore: {exc}; nothing restored (stop it first)", file=sys.stderr)
        return EXIT_HELD
    except OSError as exc:  # an unreadable journal or lock: the originals stay where they are
        return _not_restored(exc)
    finally:
        board.release()
    lock.release()
    for attribute in report.restored:
        print(f"restored {attribute}")
    for attribute in report.unchanged:  # the run had set it back itself before it died
        print(f"unchanged {attribute}")
    if report.failed:
        kept = journal.attributes  # the rest failed for good (the attribute is gone)
        print(f"wattgate restore: {len(report.failed)} attribute(s) not restored"
              + (f"; {journal.path} keeps {', '.join(kept)} for the next try" if kept else ""),
              file=sys.stderr)
    # A torn journal set aside, or entries skipped (logged above), now or by an earlier
    # run: originals that were not given back, though no write failed. "nothing to
    # restore" and 0 would call the board restored.
    earlier = [p for p in set_aside_journals(directory) if p not in journal.set_aside]
    if _report_set_aside(earlier) or not report.ok:
        return EXIT_NOT_RESTORED
    if not report.restored and not report.unchanged and not earlier_restored:
        print("nothing to restore")
    return earlier_exit or 0


def _board_driven(root: str, held: LockHeld) -> int:
    """Say that a live daemon drives the board; EXIT_HELD."""
    print(f"wattgate restore: power.sysfs_root {root} is driven by another wattgate"
          f"{f' (pid {held.pid})' if held.pid else ''}; nothing restored (stop it first)",
          file=sys.stderr)
    return EXIT_HELD


def _restore_earlier_journals(cfg: Config, directory: Path) -> tuple[Optional[int], bool]:
    """The journals of the journal_dirs earlier runs used (daemon/journal_dirs.py: a
    power.journal_dir changed after a crash), given back first, as the daemon's start does,
    and printed as the current one's are. Returns (the exit they call for, None when all
    went back; whether any attribute was), and (EXIT_HELD, False) when a daemon drives
    the board: then nothing is touched."""
    from wattgate.daemon import journal_dirs
    from wattgate.daemon.pidlock import DirectoryLock, LockHeld
    from wattgate.drivers.sysfs import Sysfs

    earlier_dirs = journal_dirs.pending(journal_dirs.noted(cfg.daemon.state_dir), directory)
    if not earlier_dirs:
        return None, False
    root = cfg.power.sysfs_root
    board = DirectoryLock(root)
    try:
        board.acquire()
    except LockHeld as held:
        return _board_driven(root, held), False
    except FileNotFoundError:
        pass  # no daemon can drive a root that is not there; take_over says what is missing
    except OSError:
        return None, False  # the restore of power.journal_dir meets it too, and says so
    try:
        kept, reports = journal_dirs.restore_earlier(earlier_dirs, Sysfs(root))
    finally:
        board.release()
    restored = False
    for _, report in reports:
        for attribute in report.restored:
            print(f"restored {attribute}")
        for attribute in report.unchanged:
            print(f"unchanged {attribute}")
        restored = restored or bool(report.restored or report.unchanged)
    if not kept:
        return None, restored
    print(f"wattgate restore: the sysfs journal(s) in {', '.join(kept)}, power.journal_dir of "
          "an earlier run, keep originals not restored (see above)", file=sys.stderr)
    return EXIT_NOT_RESTORED, restored


def _not_restored(exc: OSError, what: Optional[str] = None) -> int:
    """Say on stderr, in one line, why the journal could not be looked at or used, and
    return the exit. A permission refused (a journal_dir of mode 0700, a journal or lock
    of the daemon's user) is 77 with what to do: the journal is the daemon's user's, and
    only that user or root can restore from it. It came out as a traceback, exit 1."""
    refused = exc.errno in (errno.EACCES, errno.EPERM)
    reason = f"{exc}; nothing restored"
    if exc.filename is not None:  # not "[Errno 13] Permission denied: '...'"; a
        # JournalError has none, and its message already says what to do
        reason = f"{what or exc.filename}: {exc.strerror}; nothing restored"
        if refused:
            reason += ": run it as the daemon's user (who owns power.journal_dir) or as root"
    print(f"wattgate restore: {reason}", file=sys.stderr)
    return EXIT_NO_PERMISSION if refused else EXIT_NOT_RESTORED


def _report_set_aside(paths: list[Path]) -> bool:
    """Say on stderr that these set-aside journals' originals were not restored, and how to
    read them; whether there were any."""
    if paths:
        print(f"wattgate restore: {len(paths)} journal(s) set aside earlier as unusable: "
              f"{', '.join(map(str, paths))}; none of their originals were restored, and the "
              "board may still have the settings of the run that wrote them. Read each "
              "(cat PATH: the JSON journal, maybe torn, whose \"entries\" give each "
              "\"attribute\" under its \"root\" and its \"original\"), write back by hand "
              "what the board still needs, then remove the file; until then restore exits 1",
              file=sys.stderr)
    return bool(paths)


def fixed(value: Any, spec: str) -> str:
    """A number formatted with spec, or "-" for one the daemon has no value for: it sends a
    reading that is not finite (a sensor that read NaN) as null (docs/protocol.md)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return "-"


def format_power_message(message: dict[str, Any]) -> str:
    """One line for a `power` message (`wattgate watch --topics power`): time, profile and
    why, activity, watts and where they come from, the hottest zone."""
    when = time.strftime("%H:%M:%S", time.localtime(message.get("ts", 0.0)))
    line = (f"{when} power   {message.get('profile')} ({message.get('reason')}), "
            f"{message.get('activity')}")
    if "watts" in message:
        line += f", {fixed(message['watts'], '.2f')} W ({message.get('watts_source', '?')})"
    temps = [(k, v) for k, v in message.get("temperatures", {}).items() if v is not None]
    if temps:
        zone, celsius = max(temps, key=lambda kv: kv[1])
        line += f", {zone} {fixed(celsius, '.1f')} °C"
    return line


def _energy(joules: dict[str, Any]) -> str:
    """The energy since start, each figure saying what it covers: `measured` counts only
    the seconds a meter was read (a battery is one only while the board runs on it), so
    shown alone as "since start" it left out the hours on mains."""
    parts = []
    if joules.get("estimated") is not None:
        parts.append(f"{fixed(joules['estimated'], '.1f')} J since start (estimate)")
    if joules.get("measured") is not None:
        parts.append(f"{fixed(joules['measured'], '.1f')} J metered")
    return ", " + ", ".join(parts) if parts else ""


def format_power(power: dict[str, Any]) -> list[str]:
    """Lines for `wattgate status`: profile and why, activity, watts, temperatures, knobs."""
    profile = power.get("profile", {})
    lines = [f"profile   {profile.get('name')} ({profile.get('reason')})"]
    activity = power.get("activity", {})
    line = f"activity  {activity.get('state')} ({activity.get('reason')})"
    if "idle_in_s" in activity:
        line += f", idle in {fixed(activity['idle_in_s'], '.1f')} s"
    lines.append(line)
    watts = power.get("watts", {})
    if "value" in watts:
        source = watts.get("meter") or f"estimate, {watts.get('model', 'model')}"
        lines.append(f"power     {fixed(watts['value'], '.2f')} W ({source})"
                     + _energy(power.get("joules", {})))
    temps = power.get("temperatures", {})
    if temps:
        # Hottest first; a zone without a reading last.
        hottest = sorted(temps.items(), key=lambda kv: (kv[1] is None, -(kv[1] or 0)))[:4]
        lines.append("temps     " + ", ".join(f"{k} {fixed(v, '.1f')} °C" for k, v in hottest))
    if not power.get("writes", True):
        lines.append("knobs     not written (power.enabled = false or no journal)")
    for name, knob in power.get("knobs", {}).items():
        value = knob.get("value")
        value = "?" if value is None else value  # pending write, or a read that hangs
        extra = f" (was {knob['original']})" if knob.get("original") not in (None, value) else ""
        if "error" in knob:
            extra += f"  FAILED: {knob['error']}"
        lines.append(f"  {name} = {value}{extra}")
    return lines


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `probe`, `simulate` and `restore` to the `wattgate` command's subparsers."""
    from wattgate.boards import SIMULATED

    probe = sub.add_parser("probe", help="show the power knobs and readings this machine has")
    probe.add_argument("--sysfs-root", type=_sysfs_root,
                       help="read this tree instead of /sys (a fake board)")
    probe.add_argument("--config", help="take power.sysfs_root, npu, gpu and "
                       "runtime_pm_devices from this config")
    probe.add_argument("--json", action="store_true", help="machine-readable output")
    probe.set_defaults(func=cmd_probe)

    sim = sub.add_parser(
        "simulate",
        help="replay a scene through the gate and a power profile on an emulated board",
        description="Energy, inferences and event recall of a profile against two baselines "
        "(always_on, governor_only) on an emulated board.",
    )
    sim.add_argument("--board", required=True, choices=SIMULATED,
                     help="board to emulate (one whose energy model has its CPU or NPU)")
    sim.add_argument("--scene", help="a generated scene (office, person, ...)")
    sim.add_argument("--video", help="a video file to replay (needs --labels)")
    sim.add_argument("--labels", help='labels JSON: {"fps": F, "events": [[first, last], ...]}')
    sim.add_argument("--profile", help="profile to simulate (default: power.profile)")
    sim.add_argument("--config", help="config.toml with the profiles and model to use")
    sim.add_argument("--model-ms", type=positive_number,
                     help="inference time at the NPU's top clock (default: measured)")
    sim.add_argument("--json", action="store_true", help="machine-readable output")
    sim.set_defaults(func=cmd_simulate)

    restore = sub.add_parser(
        "restore",
        help="put back the sysfs values a killed daemon left changed",
        description="Write back every original value the journal in power.journal_dir still "
        "holds (what a daemon killed with SIGKILL left changed), under power.sysfs_root. "
        "Exits 75 and touches nothing while a daemon holds the journal, 77 when this user "
        "may not look in power.journal_dir or open its journal or lock (run it as the "
        "daemon's user or root). Exits 1 when a "
        "value could not be written back, and while journals set aside as unusable "
        "(sysfs-journal.json.corrupt, .corrupt.N) are left in power.journal_dir: their "
        "originals were never restored; read them, write back what the board needs, then "
        "remove them. Exits 78 for a bad config, or a power.journal_dir that is not a "
        "directory.",
    )
    restore.add_argument("--config", help="the daemon's config (default: built-in defaults)")
    restore.set_defaults(func=cmd_restore)
