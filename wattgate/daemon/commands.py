"""What each protocol command does (docs/protocol.md). Framing and errors are server.py's.

Each handler checks its fields strictly (unknown fields and wrong types are
`bad_request`, so a client's typo is caught) and returns the fields of its reply.
Control commands (`profile` with `set`, `reload`) need uid 0 or membership of
`daemon.admin_group`, checked against the peer's own credentials (SO_PEERCRED and its
supplementary groups), and every control action is logged with the peer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import grp
import logging
import os
import pwd
import sqlite3
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional

from wattgate.daemon.hub import MAX_LINE, ClientSession, Message, encode, fit_message, json_text
from wattgate.daemon.pipeline import detection_fields
from wattgate.daemon.server import STOPPING as STOPPING  # app.py's too
from wattgate.daemon.server import (
    Handler,
    PeerCreds,
    ProtocolError,
    check_answer_fits,
    check_fields,
    echo,
    id_bytes,
)
from wattgate.drivers import images

if TYPE_CHECKING:
    from wattgate.daemon.app import Daemon
    from wattgate.drivers.inference import InferenceResult

log = logging.getLogger("wattgate.commands")

TOPICS = ("results", "events", "power")
MAX_EVENT_SEQ = 2**62  # the highest `since` taken: more than any log numbers
MAX_EVENTS_PER_REPLY = 1000
DEFAULT_SNAP_TIMEOUT_MS = 5000
MAX_SNAP_TIMEOUT_MS = 60_000
NO_CONFIG_FILE = "running on built-in defaults; there is no config file to reload"
#: An `infer` image's pixels, by its header: over this it is not decoded at all.
MAX_IMAGE_PIXELS = 4096 * 4096
#: The memory decoding an `infer` image may take at its peak (about 7 bytes a pixel decoded:
#: images.DECODE_BYTES_PER_PIXEL). A large JPEG is decoded at 1/2, 1/4 or 1/8 of its size to
#: fit, its boxes given back in its own pixels; a PNG over about 9.5 megapixels is refused.
MAX_DECODE_BYTES = 64 * 1024 * 1024


def is_admin(creds: Optional[PeerCreds], group: Optional[str]) -> bool:
    """Root, or a member of `group` (primary or supplementary), may control the daemon."""
    if creds is None:
        return False
    if creds.uid == 0:
        return True
    if not group:
        return False
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    return creds.gid == gid or gid in supplementary_groups(creds)


def supplementary_groups(creds: PeerCreds) -> tuple[int, ...]:
    """The groups the peer process holds besides its primary one.

    The process's own groups, not /etc/group's list for its user: a service started with
    SupplementaryGroups= is not listed there, and a process that dropped its groups no
    longer has them. From SO_PEERGROUPS (taken at connect), else from /proc (kernels
    before 4.13); the user database only when neither can be read.
    """
    if creds.groups is not None:
        return creds.groups
    groups = proc_groups(creds)
    if groups is not None:
        return groups
    try:
        user = pwd.getpwuid(creds.uid).pw_name
    except KeyError:
        return ()
    return tuple(os.getgrouplist(user, creds.gid))


def proc_groups(creds: PeerCreds) -> Optional[tuple[int, ...]]:
    """The `Groups:` of /proc/<pid>/status, or None if it cannot be read.

    A process whose effective ids are not the peer's is not the peer (its pid was reused
    after the peer exited, or it changed ids): it holds no groups for the peer.
    """
    try:
        with open(f"/proc/{creds.pid}/status", encoding="ascii") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
    except (OSError, ValueError):
        return None
    try:
        euid, egid = int(fields["Uid"].split()[1]), int(fields["Gid"].split()[1])
        groups = tuple(int(g) for g in fields["Groups"].split())
    except (KeyError, IndexError, ValueError):
        return None
    return groups if (euid, egid) == (creds.uid, creds.gid) else ()


def image_reply(decoded: images.Decoded, result: InferenceResult) -> Message:
    """The fields of an `infer` reply: the client's image size, and the boxes in its pixels
    even when it was decoded smaller."""
    detections = [replace(det, box=decoded.source_box(det.box)) for det in result.detections]
    return {
        "width": decoded.width,
        "height": decoded.height,
        "infer_ms": round(result.invoke_ms, 3),
        **detection_fields(replace(result, detections=detections)),
    }


def get_int(request: Message, name: str, default: int, low: int, high: int) -> int:
    """An integer field within low..high. JSON has no integer type and a script's
    `timeout * 1000` is a float, so a finite float with no fraction (5000.0) is taken as
    that integer; a fraction, a bool or anything else is refused."""
    value = request.get(name, default)
    if isinstance(value, float) and value.is_integer():  # False for inf and NaN
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("bad_request", f"field '{name}' must be an integer")
    if not low <= value <= high:
        raise ProtocolError("bad_request", f"field '{name}' must be within {low}..{high}")
    return value


def get_str_list(request: Message, name: str) -> Optional[list[str]]:
    """The field, a list of strings, or None when it is absent. null is no list: taken
    for absent, a buggy `"topics": null` would unsubscribe from everything."""
    if name not in request:
        return None
    value = request[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError("bad_request", f"field '{name}' must be a list of strings")
    return value


def refuse_empty(values: Optional[list[str]], name: str, default: str) -> None:
    """An empty list where leaving the field out means the default is refused: a client
    that named nothing most likely made a mistake (an empty `labels` would filter out
    every result, and no result would say why)."""
    if values == []:
        raise ProtocolError("bad_request", f"field '{name}' is an empty list; leave it out "
                                           f"for the default, {default}")


def get_topics(request: Message) -> Optional[list[str]]:
    """The `topics` of a request, all of them known, or None when there is none."""
    topics = get_str_list(request, "topics")
    unknown = sorted(set(topics or ()) - set(TOPICS))
    if unknown:
        raise ProtocolError("bad_request", f"field 'topics' has unknown topic(s) {echo(unknown)}; "
                                           f"known: {', '.join(TOPICS)}")
    return topics


def image_bytes(data: Any, limit: int) -> bytes:
    """A client's base64 image as bytes, at most limit of them; errors name what is wrong."""
    if not isinstance(data, str):
        raise ProtocolError("bad_request", "field 'image' must be a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_request", "field 'image' is not valid base64") from None
    if len(raw) > limit:
        raise ProtocolError("too_large", f"field 'image' is {len(raw)} bytes decoded; the limit "
                                         f"is {limit}")
    return raw


def fit_line(events: list[Message], budget: int) -> list[Message]:
    """The longest prefix of events whose JSON fits in budget bytes, at least one: a first
    event too large for the budget on its own comes with its largest fields omitted
    (fit_message), so a client paging with `since` always gets past it."""
    used = 0
    for count, item in enumerate(events):
        used += len((json_text(item) or "").encode()) + 1  # as the answer will write it
        if used > budget:
            if count:
                return events[:count]
            return [fit_message(item, budget)]  # its line's newline stands for the comma
    return events


class Commands:
    """The command table the server dispatches to; state lives in the daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._infer_one = asyncio.Lock()

    def table(self) -> dict[str, Handler]:
        return {
            "status": self.status,
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            "events": self.events,
            "snap": self.snap,
            "infer": self.infer,
            "profile": self.profile,
            "reload": self.reload,
        }

    def _require_admin(self, session: ClientSession, action: str) -> None:
        group = self.daemon.cfg.daemon.admin_group
        if not is_admin(session.creds, group):
            log.warning("refused %s from %s: not root or in group %s", action, session.peer, group)
            raise ProtocolError(
                "forbidden", f"{action} needs root or membership of group {group!r}"
            )

    async def status(self, session: ClientSession, request: Message) -> Message:
        check_fields(request, set())
        power = self.daemon.power
        if power is not None:
            # The knobs' reads run off the loop, awaited here for a bounded time: one in a
            # driver that does not answer must not hold up the other clients (power.py).
            await power.read_knobs()
        return {"class": "status", **self.daemon.status()}

    async def subscribe(self, session: ClientSession, request: Message) -> Message:
        check_fields(request, {"topics", "min_score", "labels"})
        topics = get_topics(request)
        refuse_empty(topics, "topics", "['results']")
        topics = topics or ["results"]
        filters: dict[str, Any] = {}
        if "min_score" in request:
            score = request["min_score"]
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise ProtocolError("bad_request", "field 'min_score' must be a number")
            if not 0 <= score <= 1:
                raise ProtocolError("bad_request", "field 'min_score' must be within 0..1")
            filters["min_score"] = float(score)
        labels = get_str_list(request, "labels")
        refuse_empty(labels, "labels", "every label")
        if labels is not None:
            filters["labels"] = set(labels)
        reply: Message = {"topics": sorted(session.topics.union(topics))}
        if filters:
            reply["filters"] = {
                k: sorted(v) if isinstance(v, set) else v for k, v in filters.items()
            }
        check_answer_fits(request, reply)
        session.topics.update(topics)
        session.filters = filters
        return reply

    async def unsubscribe(self, session: ClientSession, request: Message) -> Message:
        check_fields(request, {"topics"})
        topics = get_topics(request)
        if topics is None:
            session.topics.clear()
        else:
            session.topics.difference_update(topics)
        return {"topics": sorted(session.topics)}

    async def events(self, session: ClientSession, request: Message) -> Message:
        check_fields(request, {"since", "limit"})
        since = get_int(request, "since", 0, 0, MAX_EVENT_SEQ)
        limit = get_int(request, "limit", 100, 1, MAX_EVENTS_PER_REPLY)
        log_ = self.daemon.eventlog
        try:
            found = log_.since(since, limit)
            oldest = log_.oldest_seq()
        except sqlite3.Error as exc:  # damaged or unreadable under a running daemon
            raise ProtocolError("unavailable", f"the event log cannot be read: {exc}") from None
        reply: Message = {"events": [], "last_seq": log_.last_seq, "oldest_seq": oldest,
                          "more": False}
        # What the line has left for the events once the rest of the answer and its id
        # are in it: at least about 4 KiB (server.ID_ROOM), room for any event's seq,
        # ts and kind.
        room = MAX_LINE - id_bytes(request) - len(
            encode({"class": "reply", "cmd": request["cmd"], **reply}))
        events = fit_line(found, room)
        reply["events"] = events
        reply["more"] = bool(events) and events[-1]["seq"] < log_.last_seq
        return reply

    async def snap(self, session: ClientSession, request: Message) -> Message:
        check_fields(request, {"timeout_ms"})
        timeout_ms = get_int(request, "timeout_ms", DEFAULT_SNAP_TIMEOUT_MS, 1, MAX_SNAP_TIMEOUT_MS)
        result = await self.daemon.snap(timeout_ms / 1000.0)
        if result is None:
            raise ProtocolError("unavailable", STOPPING if self.daemon.stopping
                                else self.daemon.no_frame(timeout_ms))
        return {"result": result}

    async def infer(self, session: ClientSession, request: Message) -> Message:
        check_fields(request, {"image"})
        if "image" not in request:
            raise ProtocolError("bad_request", "field 'image' is required")
        raw = image_bytes(request["image"], self.daemon.cfg.daemon.max_image_bytes)
        pipeline = self.daemon.pipeline
        if pipeline is None:
            raise ProtocolError("unavailable", "the model is not loaded yet")
        # Off the event loop (a large image takes a while to decode), and one image at a time:
        # each may take MAX_DECODE_BYTES, and the model takes them one by one anyway.
        async with self._infer_one:
            try:
                decoded = await self.daemon.client_images.run(
                    images.decode_within, raw, MAX_IMAGE_PIXELS, MAX_DECODE_BYTES)
            except images.ImageError as exc:
                raise ProtocolError("bad_request", f"field 'image' is {exc}") from None
            result = await self.daemon.client_images.run(pipeline.infer_image, decoded.image)
        return image_reply(decoded, result)

    async def profile(self, session: ClientSession, request: Message) -> Message:
        check_fields(request, {"set"})
        # The request is checked before the board: a malformed one is the client's mistake
        # on any daemon, and is not to be taken for missing power control. So is who asks:
        # a peer that may not set a profile is told so on any daemon, not sent to look for
        # one with power control, where it would only be refused.
        name = request.get("set")
        if name is not None and not isinstance(name, str):
            raise ProtocolError("bad_request", "field 'set' must be a profile name or null")
        if "set" in request:
            self._require_admin(session, "profile set")
        power = self.daemon.power
        if power is None:
            raise ProtocolError("unavailable", "power control is not running")
        if "set" in request:
            if self.daemon.stopping:  # the originals are going back: a pin would not hold
                raise ProtocolError("unavailable", STOPPING)
            try:
                self.daemon.pin_profile(name, session.peer)
            except KeyError:
                log.info("profile set to unknown %s by %s: refused", echo(name), session.peer)
                known = ", ".join(power.profile_status()["available"])
                raise ProtocolError(
                    "bad_request", f"field 'set' names unknown profile {echo(name)}; known: {known}"
                ) from None
        return {"profile": power.profile_status()}

    async def reload(self, session: ClientSession, request: Message) -> Message:
        check_fields(request, set())
        self._require_admin(session, "reload")
        log.info("reload requested by %s", session.peer)
        if self.daemon.config_path is None:  # nothing the client sent is wrong
            raise ProtocolError("unavailable", NO_CONFIG_FILE)
        ok, message = await self.daemon.reload()
        if not ok:
            raise ProtocolError("unavailable" if message == STOPPING else "bad_request", message)
        return {"reloaded": True, "message": message}
