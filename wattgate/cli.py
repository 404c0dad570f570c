"""The `wattgate` command: run the daemon, talk to it, check configs."""

from __future__ import annotations

import signal
import threading

# Ctrl-C while the rest loads (about 0.2 s: asyncio, pydantic, the bench and power commands)
# comes before main() can make it the quiet exit 130 it promises. Raised in the middle of
# an import, its KeyboardInterrupt was a traceback and a death by SIGINT (in pydantic's
# compiled core, a crash of its own); it is noted instead, and acted on once all is loaded.
# Not where SIGINT is ignored (`nohup`, `&` in a script) or handled by another program.
_sigint_while_loading: list[int] = []
_note_sigint = (signal.getsignal(signal.SIGINT) is signal.default_int_handler
                and threading.current_thread() is threading.main_thread())
if _note_sigint:
    signal.signal(signal.SIGINT, lambda signum, _frame: _sigint_while_loading.append(signum))
try:
    import argparse
    import asyncio
    import contextlib
    import faulthandler
    import grp
    import io
    import json
    import logging
    import os
    import re
    import sys
    import tempfile
    import time
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import Optional

    from wattgate import __version__
    from wattgate.bench import register as register_bench
    from wattgate.cli_power import (
        fixed,
        format_power,
        format_power_message,
        positive_int,
        positive_number,
    )
    from wattgate.cli_power import register as register_power
    from wattgate.cli_watch import Watch, logged_events, note
    from wattgate.client import DEFAULT_SOCKET, Client, ClientError, Message
    from wattgate.config import (
        Config,
        ConfigError,
        ModelConfig,
        config_path,
        json_schema,
        load_config,
        report_config_error,
    )
    from wattgate.drivers.runtime import RuntimeMissing
finally:
    if _note_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)
if _sigint_while_loading:
    raise SystemExit(130)

EXIT_UNAVAILABLE = 69
# A client command's exit code for the daemon's error codes (sysexits.h): a script can tell
# "no daemon" from "try again" from "not allowed" without reading stderr.
CLIENT_EXIT_CODES = {
    "unavailable": EXIT_UNAVAILABLE,
    "busy": 75,  # EX_TEMPFAIL: max_clients reached; a retry later may get in
    "timeout": 75,
    "forbidden": 77,  # EX_NOPERM: neither root nor in daemon.admin_group
}


def _fail(message: str, code: int) -> int:
    note(message)
    return code


def _client_failure(exc: ClientError, as_json: bool) -> int:
    """A client command's error: the line on stderr for people and, with --json, the same
    error as one protocol `error` object on stdout for a script, which reads only stdout
    (README, Commands). The exit code is the same either way, stdout closed or not (a
    script that stopped reading: `watch --json | head -1`)."""
    code = _fail(str(exc), CLIENT_EXIT_CODES.get(exc.code, 1))
    if as_json:
        _print_json_error(exc.code, exc.message)
    return code


def _config_failure(exc: ConfigError, as_json: bool) -> int:
    """A bad config: reported on stderr and, for a client command's --json, on stdout as
    one `error` object with code bad_config, as any other of its errors."""
    code = report_config_error(exc)
    if as_json:
        _print_json_error("bad_config", f"bad config {exc}")
    return code


def _print_json_error(code: str, message: str) -> None:
    try:
        print(json.dumps({"class": "error", "code": code, "message": message}), flush=True)
    except BrokenPipeError:
        discard_unwritten_output()


def discard_unwritten_output() -> None:
    """Point stdout at /dev/null once its reader has gone away (`watch --json | head -1`).
    What could not be written stays in sys.stdout's buffer, and Python flushes it again at
    exit: that second broken pipe printed "Exception ignored ... BrokenPipeError" and made
    the exit code 120, although the command had ended cleanly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def escape_what_stdout_cannot_show() -> None:
    """Print what stdout's encoding cannot show as backslash escapes (°C as \\xb0C), as
    stderr already does. A terminal with a Latin-1 or ASCII locale made every status of a
    board with thermal zones, and a label in another script, end in a UnicodeEncodeError
    traceback. --json is unchanged: json.dumps writes ASCII."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket is not None:
        return str(args.socket)
    config = config_path(args.config)
    if config is not None:
        return load_config(config).daemon.socket
    # empty is unset, as systemd's Environment=WATTGATE_SOCKET= means ("cannot connect to :")
    return os.environ.get("WATTGATE_SOCKET", "").strip() or DEFAULT_SOCKET


def _nonempty(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return value


# What the daemon takes of each option it is sent (docs/protocol.md; daemon/commands.py
# refuses anything else with bad_request), as (lowest, highest). Refused here instead, a value
# out of range is a usage error (exit 2) before anything connects, not the daemon's answer.
EVENTS_SINCE = (0, 2**62)  # events' since: a seq
EVENTS_LIMIT = (1, 1000)  # events' limit: events in one answer
SNAP_TIMEOUT_MS = (1, 60_000)  # snap's timeout_ms


def int_within(low: int, high: int) -> Callable[[str], int]:
    """An argparse type for a whole number from low to high; its error, which argparse puts
    after the option's name, says the range."""
    def within(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a whole number: {value!r}; must be within {low}..{high}") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be within {low}..{high}, got {number}")
        return number

    return within


def _profile_name(value: str) -> str:
    """A profile to pin. An empty one (an unset variable in `profile "$NAME"`) would be
    taken for no NAME at all: the profile shown, exit 0, as if it had been pinned."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty profile name")
    return value


# -- commands -------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    # A SIGHUP's default action ends the process, and the daemon takes the signal over only
    # once OpenCV and TFLite are loaded: one sent meanwhile (a reload right after a start)
    # killed it. Held here until then; the daemon reloads once for it.
    hangups: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, _frame: hangups.append(signum))
    try:
        path = config_path(args.config)
        cfg = load_config(path)
    except ConfigError as exc:
        return report_config_error(exc)
    # Imported only now: a bad config is reported without loading OpenCV and TFLite.
    from wattgate.daemon.app import Daemon, StartupError
    from wattgate.daemon.logs import setup_logging
    setup_logging(cfg.daemon.log_level)
    for left_out in cfg.notes:  # a drop-in's array that left entries out (Config.notes)
        logging.getLogger("wattgate.daemon").warning("%s", left_out)
    from wattgate.daemon.handoff import end_process
    from wattgate.daemon.server import SocketPathError
    faulthandler.enable()  # the watchdog's SIGABRT then leaves every thread's stack in the log
    try:
        code = asyncio.run(Daemon(cfg, path, early_hangups=hangups).run())
    except (StartupError, SocketPathError) as exc:
        # What this machine refuses of the config (daemon.socket in a directory that is a
        # file or not writable, another program's socket there): a restart meets the same
        # refusal, so 69, which the unit's RestartPreventExitStatus= does not retry; exit 1
        # had systemd start it again every few seconds, forever.
        code = _fail(str(exc), EXIT_UNAVAILABLE)
    except OSError as exc:
        code = _fail(f"cannot start: {exc}", 1)
    return end_process(code)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Parse and validate the config, then check on this machine what `run` would refuse
    at start because of its values (exit 69, as `run`): "ok" for a config whose `run`
    then failed left the unit down after a restart (RestartPreventExitStatus=69)."""
    try:
        cfg = load_config(config_path(args.path))
    except ConfigError as exc:
        return report_config_error(exc)
    refused, unused = _model_problems(cfg)
    _report(args.path, "warning",
            cfg.notes + _group_problems(cfg) + unused + _journal_problems(cfg))
    refused += _place_problems(cfg)
    if _report(args.path, "`run` would not start on this machine", refused):
        return EXIT_UNAVAILABLE
    print(f"{args.path}: ok")
    return 0


def _report(path: str, heading: str, problems: list[str]) -> bool:
    """The problems on stderr as a bad config's are, one a line under a heading; whether
    there were any."""
    if problems:
        print(f"wattgate: {path}: {heading}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
    return bool(problems)


# Why a variant that cannot be loaded is a warning: `run` starts without loading it.
VARIANT_NOTE = ("loaded only when a profile or rule picks it: `run` then refuses to start "
                "on it (69), a switch to it keeps the model running")


def _model_problems(cfg: Config) -> tuple[list[str], list[str]]:
    """(what `run` refuses, what it may meet later) of the models, as "key: why" lines.

    The main model's files (model.path, model.labels) and, when they are good, the model
    as `run` loads it (Model.load: its input, its decoder for model.kind, its output
    scales): `run` loads it at start, and refuses what does not load. That load makes a
    CPU interpreter, never the delegate: a delegate would open the accelerator a running
    daemon holds, and one that cannot load or take the model is only a warning at `run`
    (it runs on CPU).

    A variant is checked the same way but is a warning: it is loaded only when a profile or
    rule picks it (VARIANT_NOTE), and `run` and a reload take a config whose unused
    variant's file is missing. Refusing it made check-config's verdict differ from run's."""
    # Imported only now, as for `run`: a bad config is reported without loading OpenCV.
    from wattgate.policies.profiles import variant_model

    refused = _model_lines("model", cfg.model)
    labels_refused = any(line.startswith("model.labels:") for line in refused)
    unused = []
    for name, variant in cfg.model.variants.items():
        model = variant_model(cfg.model, name)
        if labels_refused and variant.labels is None:  # said once, under model.labels
            model = model.model_copy(update={"labels": None})
        unused += [f"{line}; {VARIANT_NOTE}" for line in
                   _model_lines(f"model.variants.{name}", model)]
    return refused, unused


def _model_lines(key: str, model: ModelConfig) -> list[str]:
    """What is wrong with the model `model` describes, each line under its key in the
    config (`key`.path, .labels, .kind); empty if it loads."""
    from wattgate.drivers.decoders import DecoderError, LabelsError, load_labels
    from wattgate.drivers.inference import (
        Model,
        ModelError,
        check_model_file,
        default_model_path,
    )

    problems = []
    try:
        check_model_file(default_model_path() if model.path is None else Path(model.path))
    except ModelError as exc:
        problems.append(f"{key}.path: {exc}")
    try:
        if model.labels is not None:
            load_labels(model.labels)
    except LabelsError as exc:
        problems.append(f"{key}.labels: {exc}")
    if problems:
        return problems
    try:
        with _runtime_info_dropped():
            Model.from_config(model.model_copy(update={"delegate": None}))
    except RuntimeMissing as exc:  # the machine's, not a variant's: said once, under model
        return [f"{key}: {exc}"] if key == "model" else []
    except ModelError as exc:
        part = "kind" if isinstance(exc.__cause__, DecoderError) else "path"
        return [f"{key}.{part}: {exc}"]
    return []


@contextlib.contextmanager
def _runtime_info_dropped() -> Iterator[None]:
    """Drop the INFO lines the TFLite runtime writes to file descriptor 2 meanwhile, and pass
    on anything else written there. Making an interpreter prints "INFO: Created TensorFlow
    Lite XNNPACK delegate for CPU." from C++, past Python's logging; check-config's stderr
    is its verdict, empty for a config that is ok."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines():
                if not line.startswith("INFO: "):
                    print(line, file=sys.stderr)


def _place_problems(cfg: Config) -> list[str]:
    """daemon.socket and daemon.state_dir where `run` could not bind its socket or keep
    its event log, in the words `run` refuses them with (exit 69): a directory that is a
    regular file, one this user may not write (check-config is run as the daemon's user
    for that to be the daemon's answer), a file or directory where the socket goes, a file
    of the log that is a directory. Nothing is
    made: a state_dir not there yet is checked through the directory it would be made in.
    A running daemon's socket and lock are what `run` meets at a restart, not refusals."""
    from wattgate.daemon.eventlog import check_place
    from wattgate.daemon.server import SocketPathError, check_socket_path

    problems = []
    try:
        check_socket_path(cfg.daemon.socket)
    except SocketPathError as exc:
        problems.append(str(exc))
    state_dir = cfg.daemon.state_dir
    try:
        check_place(os.path.join(state_dir, "events.db"), make=False)
    except OSError as exc:
        problems.append(f"daemon.state_dir {state_dir}: cannot open the event log: {exc}")
    return problems


def _journal_problems(cfg: Config) -> list[str]:
    """power.journal_dir where `run` cannot keep the journal of the sysfs originals: under
    a regular file, one itself, or a directory this user may not write. `run` starts, but
    writes no power settings (daemon/power.py, _open_journal), and a reload to it is
    refused: a warning, in the words of the check the reload makes. With power.enabled =
    false `run` keeps no journal, and nothing is said."""
    from wattgate.daemon.pathcheck import expect_journal_dir

    journal = cfg.power.journal_dir
    if not cfg.power.enabled:
        return []
    try:
        expect_journal_dir(journal)
    except OSError as exc:
        return [f"power.journal_dir {journal}: {exc}; power settings will not be written"]
    return []


def _group_problems(cfg: Config) -> list[str]:
    """daemon.socket_group and daemon.admin_group naming no group here. `run` starts
    anyway (the socket keeps the daemon's group, with a warning; only root is admin), so
    these are no reason to refuse the config, but likely not what was meant."""
    groups = [("daemon.socket_group", cfg.daemon.socket_group,
               "the socket `run` makes keeps the daemon's group"),
              ("daemon.admin_group", cfg.daemon.admin_group,
               "only root may pin profiles and reload")]
    problems = []
    for key, name, effect in groups:
        try:
            if name is not None:
                grp.getgrnam(name)
        except KeyError:
            problems.append(f"{key}: no group {name!r} on this machine; {effect}")
    return problems


def cmd_config_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


def format_status(status: Message) -> str:
    """The human view of a status answer; a number sent as null is shown as "-"."""
    lines = [f"wattgate {status.get('version')}  up {fixed(status.get('uptime_s', 0), '.0f')} s"]
    source = status.get("source")
    if source:
        line = f"source    {source['description']} ({source['state']})"
        if source.get("reason"):  # not running: why, and when it is tried again
            line += f": {source['reason']}"
            if source.get("retry_in_s") is not None:
                line += f", retry in {fixed(source['retry_in_s'], '.0f')} s"
        lines.append(line)
    model = status.get("model") or {}
    if model:
        lines.append(f"model     {model.get('name')} ({model.get('kind')}, {model.get('runtime')})")
    pipe = status.get("pipeline")
    if pipe:
        lines.append(
            f"frames    {pipe['frames']}  skipped {pipe['skipped']} "
            f"({fixed(pipe['skip_ratio'], '.1%')})  inferred {pipe['inferred']}  "
            f"stale {pipe['stale_dropped']}"
        )
        lines.append(
            f"results   {pipe['detections']} detections, mean inference "
            f"{fixed(pipe['mean_infer_ms'], '.2f')} ms, {fixed(status.get('fps', 0), '.1f')} fps"
        )
    lines.append(f"clients   {status.get('clients')}")
    if status.get("power"):
        lines.extend(format_power(status["power"]))
    return "\n".join(printable(line) for line in lines)


def cmd_status(args: argparse.Namespace) -> int:
    with Client(_socket_path(args)) as client:
        status = client.request("status")
    print(json.dumps(status) if args.json else format_status(status))
    return 0


def format_message(message: Message) -> str:
    """A line for each message `watch` receives; JSON for a class this client does not
    know (more may come within a major version)."""
    kind = message.get("class")
    if kind == "result":
        return format_result(message)
    if kind == "event":
        return format_event(message)
    if kind == "power":
        return printable(format_power_message(message))
    if kind == "overflow":
        return f"overflow: {message.get('dropped')} messages dropped (read too slowly)"
    return json.dumps(message)


def format_result(message: Message) -> str:
    dets = " ".join(
        f"{d['label']} {d['score']:.2f} [{', '.join(f'{v:.0f}' for v in d['box'])}]"
        for d in message["detections"]
    )
    return printable(
        f"#{message['seq']:<5} frame {message['frame']:<6} {message['reason']:<9} "
        f"motion {message['motion']['score']:.3f}  {message['latency_ms']:6.1f} ms  "
        f"{dets or '-'}"
    )


def cmd_watch(args: argparse.Namespace) -> int:
    render = (lambda message: json.dumps(message)) if args.json else format_message
    watch = Watch(args, render)
    if args.reconnect:
        return watch.run_reconnecting(_socket_path(args))
    return watch.run(_socket_path(args))


def format_event(message: Message) -> str:
    extra = {k: v for k, v in message.items() if k not in ("class", "seq", "ts", "kind")}
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(message["ts"]))
    # as written (a label in Chinese reads as such, not as \u escapes), control
    # characters excepted
    details = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in extra.items())
    return printable(f"#{message['seq']:<6} {when} {message['kind']:<14} {details}".rstrip())


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(line: str) -> str:
    """line with its control characters shown as \\xNN escapes: the daemon's strings
    (labels from a model's labels file, rule names, a camera's reason) are printed in a
    terminal, where an escape sequence in one could clear or recolour the screen, and a
    newline would split a record in two."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", line)


def cmd_events(args: argparse.Namespace) -> int:
    """Every event after --since, paging through the log until the newest."""
    with Client(_socket_path(args)) as client:
        for item in logged_events(client, args.since, args.limit):
            print(json.dumps(item) if args.json else format_event(item))
    return 0


def cmd_snap(args: argparse.Namespace) -> int:
    # The frame's wait, and 5 s more for the answer to come (--timeout-ms is within
    # SNAP_TIMEOUT_MS, so this is positive and finite, as settimeout needs).
    wait_s = args.timeout_ms / 1000.0 + 5.0
    with Client(_socket_path(args), timeout=wait_s) as client:
        result = client.request("snap", timeout_ms=args.timeout_ms)["result"]
    print(json.dumps(result) if args.json else format_result(result))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    with Client(_socket_path(args)) as client:
        if args.release:
            reply = client.request("profile", set=None)
        elif args.name is not None:
            reply = client.request("profile", set=args.name)
        else:
            reply = client.request("profile")
    profile = reply["profile"]
    if args.json:
        print(json.dumps(profile))
    else:  # a pin's reason already names who pinned it ("pinned by pid=...")
        print(f"{profile['name']}: {profile.get('reason', '')}")
    return 0


# -- parser ---------------------------------------------------------------------------


# The exit codes of every command, in short: README.md's "Exit codes" says when each comes.
EXIT_CODES = (
    "exit codes: 0 done; 1 other errors (the message says which); 2 usage; 69 unavailable "
    "(run: no model, TFLite runtime, camera, state_dir or socket here; clients: no daemon, "
    "or it cannot do it); 75 busy or no answer in time (restore: a daemon holds the journal "
    "or board); 77 forbidden (no permission on the socket, the pin or the journal); 78 bad "
    "config; 130 interrupted (Ctrl-C)"
)


def _add_socket_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket", type=_nonempty,
        help=f"daemon socket (default: $WATTGATE_SOCKET if set, else {DEFAULT_SOCKET})"
    )
    parser.add_argument("--config", help="take daemon.socket from this config file")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wattgate", description=__doc__, epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"wattgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", help="config.toml (default: built-in defaults)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check-config", help="validate a config file and its drop-ins, and what `run` "
        "would refuse at start on this machine: the model (its files, and model.kind "
        "against its outputs), daemon.socket's directory, daemon.state_dir (exit 69, as "
        "`run`)")
    check.add_argument("path")
    check.set_defaults(func=cmd_check_config)

    config = sub.add_parser("config", help="config helpers")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser("schema", help="print the JSON schema").set_defaults(
        func=cmd_config_schema
    )

    status = sub.add_parser("status", help="show the daemon's status")
    _add_socket_args(status)
    status.set_defaults(func=cmd_status)

    watch = sub.add_parser("watch", help="print live results")
    _add_socket_args(watch)
    watch.add_argument("--count", type=positive_int, help="stop after this many messages")
    watch.add_argument(
        "--duration", type=positive_number, help="stop after this many seconds"
    )
    watch.add_argument(
        "--topics", nargs="+", default=["results"], help="topics to subscribe to"
    )
    watch.add_argument(
        "--reconnect", action="store_true",
        help="when the connection is lost or cannot be made (the daemon stopped, restarted "
        "or is starting), say so on stderr and connect again, subscribing to the same "
        "topics; with topic events, the events missed meanwhile are printed first, from the "
        "event log, none twice. Results and power readings are live only: those made while "
        "away are not printed. --count and --duration count across reconnects. A "
        "--duration that ends before any connection was made exits as a watch without "
        "--reconnect does when it cannot connect (69 for no daemon), with its error; one "
        "that was connected at some point exits 0, even if the daemon was gone at the end. "
        "(Events the daemon drops for a watch that reads too slowly come from the log with "
        "or without this)",
    )
    watch.set_defaults(func=cmd_watch)

    events = sub.add_parser("events", help="print events from the daemon's event log")
    _add_socket_args(events)
    events.add_argument("--since", type=int_within(*EVENTS_SINCE), default=0,
                        help="events after this seq (0 or more)")
    events.add_argument("--limit", type=int_within(*EVENTS_LIMIT), default=500,
                        help="events asked for per request ({}..{})".format(*EVENTS_LIMIT))
    events.set_defaults(func=cmd_events)

    snap = sub.add_parser("snap", help="infer the next frame now, whatever the gate says")
    _add_socket_args(snap)
    snap.add_argument("--timeout-ms", type=int_within(*SNAP_TIMEOUT_MS), default=5000,
                      help="how long to wait for the frame ({}..{}, default 5000)".format(
                          *SNAP_TIMEOUT_MS))
    snap.set_defaults(func=cmd_snap)

    profile = sub.add_parser("profile", help="show, pin or release the power profile")
    _add_socket_args(profile)
    # One or the other: the protocol's release (`set: null`) names no profile, so a NAME
    # given with --release would be dropped without a word.
    pin_or_release = profile.add_mutually_exclusive_group()
    pin_or_release.add_argument(
        "name", nargs="?", type=_profile_name, help="pin this profile (needs admin rights)"
    )
    pin_or_release.add_argument(
        "--release", action="store_true", help="release a pinned profile"
    )
    profile.set_defaults(func=cmd_profile)
    register_bench(sub)
    register_power(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    escape_what_stdout_cannot_show()
    try:
        args = build_parser().parse_args(argv)
        code: int = args.func(args)
        # Flushed here, not at exit: a reader gone before the output was written (`status
        # | true`) is then the quiet exit below, not Python's "Exception ignored" and 120.
        sys.stdout.flush()
    except ConfigError as exc:
        return _config_failure(exc, getattr(args, "json", False))
    except ClientError as exc:
        return _client_failure(exc, getattr(args, "json", False))
    except RuntimeMissing as exc:  # simulate, bench (run's is a StartupError): 69
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        discard_unwritten_output()
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
