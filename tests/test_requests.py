"""Requests at the edges of the protocol, over real AF_UNIX connections to the real daemon:
who counts as an administrator."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from tests.conftest import DaemonProcess
from wattgate.daemon.commands import is_admin, proc_groups
from wattgate.daemon.server import PeerCreds

StartDaemon = Callable[..., DaemonProcess]


# -- administrators: the peer's own groups ------------------------------------------------


def spare_group() -> grp.struct_group:
    """A group that neither root nor nobody has, to grant through a process's groups only."""
    nobody = pwd.getpwnam("nobody")
    for group in grp.getgrall():
        if group.gr_gid not in (0, nobody.pw_gid) and "nobody" not in group.gr_mem:
            return group
    pytest.skip("no group in the group database besides root's and nobody's")


def listed_member() -> tuple[grp.struct_group, pwd.struct_passwd]:
    """A group and a user that /etc/group lists in it (not as its primary group)."""
    for group in grp.getgrall():
        for name in group.gr_mem:
            try:
                user = pwd.getpwnam(name)
            except KeyError:
                continue
            if user.pw_uid != 0 and user.pw_gid != group.gr_gid:
                return group, user
    pytest.skip("the group database lists no user as a supplementary member of a group")


CLIENT = """\
import json, os, socket, sys
uid, gid, groups = int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
os.setgroups(groups); os.setgid(gid); os.setuid(uid)
s = socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(sys.argv[1])
f = s.makefile("rb")
f.readline()
s.sendall(b'{"cmd":"reload","id":1}\\n')
print(f.readline().decode(), end="")
"""


def reload_as(socket_path: Path, uid: int, gid: int, groups: list[int]) -> dict[str, Any]:
    """Ask for a reload from a process with these ids and supplementary groups.

    The tests run as root; the child sets its groups and drops to uid/gid before it
    connects, as a service started with SupplementaryGroups= would be.
    """
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, str(socket_path), str(uid), str(gid), json.dumps(groups)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    answer: dict[str, Any] = json.loads(out.stdout)
    return answer


@pytest.fixture
def public_daemon(start_daemon: StartDaemon) -> Iterator[Callable[[str], DaemonProcess]]:
    """start(admin_group) -> a daemon whose socket any uid can reach."""
    # pytest's tmp dirs are private to root: the socket goes where nobody can reach it.
    public = Path(tempfile.mkdtemp(prefix="wattgate-test-"))
    public.chmod(0o755)

    def start(admin_group: str) -> DaemonProcess:
        daemon = start_daemon(daemon={
            "socket": str(public / "wattgate.sock"), "socket_mode": 0o666,
            "admin_group": admin_group,
        })
        daemon.connect().close()
        return daemon

    yield start
    shutil.rmtree(public)


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to start clients as other ids"
)


@needs_root
def test_a_supplementary_group_the_process_holds_makes_an_admin(
    public_daemon: Callable[[str], DaemonProcess],
) -> None:
    group = spare_group()
    nobody = pwd.getpwnam("nobody")
    daemon = public_daemon(group.gr_name)
    held = reload_as(daemon.socket, nobody.pw_uid, nobody.pw_gid, [group.gr_gid])
    assert (held["class"], held["id"], held.get("reloaded")) == ("reply", 1, True)
    primary = reload_as(daemon.socket, nobody.pw_uid, group.gr_gid, [])
    assert primary.get("reloaded") is True
    without = reload_as(daemon.socket, nobody.pw_uid, nobody.pw_gid, [])
    assert (without["class"], without["code"]) == ("error", "forbidden")
    assert daemon.stop() == 0


@needs_root
def test_a_peer_in_too_many_groups_for_so_peergroups_is_judged_from_proc(
    public_daemon: Callable[[str], DaemonProcess],
) -> None:
    """Python reads 256 groups at most through SO_PEERGROUPS; beyond, /proc/<pid>/status."""
    group = spare_group()
    nobody = pwd.getpwnam("nobody")
    many = [g for g in range(40000, 40400) if g != group.gr_gid][:300]
    daemon = public_daemon(group.gr_name)
    held = reload_as(daemon.socket, nobody.pw_uid, nobody.pw_gid, [*many, group.gr_gid])
    assert held.get("reloaded") is True
    without = reload_as(daemon.socket, nobody.pw_uid, nobody.pw_gid, many)
    assert (without["class"], without["code"]) == ("error", "forbidden")
    assert daemon.stop() == 0


@needs_root
def test_a_listed_member_that_dropped_the_group_is_no_admin(
    public_daemon: Callable[[str], DaemonProcess],
) -> None:
    group, user = listed_member()
    daemon = public_daemon(group.gr_name)
    dropped = reload_as(daemon.socket, user.pw_uid, user.pw_gid, [])
    assert (dropped["class"], dropped["code"]) == ("error", "forbidden")
    kept = reload_as(daemon.socket, user.pw_uid, user.pw_gid, [group.gr_gid])
    assert kept.get("reloaded") is True
    assert daemon.stop() == 0


@needs_root
def test_without_so_peergroups_the_groups_come_from_proc() -> None:
    """Kernels before 4.13 have no SO_PEERGROUPS: /proc/<pid>/status of the peer decides."""
    group = spare_group()
    nobody = pwd.getpwnam("nobody")
    code = (
        "import os, sys\n"
        f"os.setgroups([{group.gr_gid}]); os.setgid({nobody.pw_gid}); os.setuid({nobody.pw_uid})\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        peer = PeerCreds(child.pid, nobody.pw_uid, nobody.pw_gid)
        assert proc_groups(peer) == (group.gr_gid,)
        assert is_admin(peer, group.gr_name)
        # Another process at that pid (the peer exited, the pid was reused): no groups.
        stranger = PeerCreds(child.pid, nobody.pw_uid + 1, nobody.pw_gid)
        assert proc_groups(stranger) == ()
    finally:
        child.communicate("")
    gone: Optional[tuple[int, ...]] = proc_groups(PeerCreds(child.pid, 0, 0))
    assert gone is None  # unreadable: the user database decides
