"""PeerResolver's memo of peer answers: never staler than the lookup without it.

Each test looks a peer up (the answer is memoised), makes one change that the memo depends on,
and checks the next answer is the one a resolver without a memo gives for the same events. Each
fails when the generation bump of that change is taken out (the memo's old answer comes back).
The listener table is the real one over a copy of tests/fixtures/proc/activation (systemd holding
web.socket 127.0.0.1:22080 and web.service holding it too); the live map is the real PidMaps.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

from hostagent.identity.listeners import ListenerMap
from hostagent.identity.peers import PeerResolver
from hostagent.identity.pid_maps import PidMaps
from hostagent.identity.procfs import ProcFS
from hostagent.identity.reader import Entry
from hostagent.identity.resource import Service

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "proc" / "activation"
SYSTEMD, WEB, OTHER, CLIENT = 32741, 355, 357, 999
PORT = 22080
HOST_NET = "net:[4026531840]"


class ProcListing(ProcFS):
    def pids(self) -> list[int]:
        return sorted(super().pids())


def tree(tmp_path: Path) -> Path:
    """systemd and web as captured, and OTHER (another copy of web's /proc), all in our netns."""
    root = tmp_path / "activation"
    (root / "proc").mkdir(parents=True)
    shutil.copytree(FIXTURE / "proc" / "net", root / "proc" / "net")
    shutil.copytree(FIXTURE / "proc" / str(SYSTEMD), root / "proc" / str(SYSTEMD), symlinks=True)
    for pid in (WEB, OTHER):
        shutil.copytree(FIXTURE / "proc" / str(WEB), root / "proc" / str(pid), symlinks=True)
    for pid in ("self", SYSTEMD, WEB, OTHER):
        (root / "proc" / str(pid) / "ns").mkdir(parents=True, exist_ok=True)
        (root / "proc" / str(pid) / "ns" / "net").symlink_to(HOST_NET)
    return root


def service(name: str, pid: int, namespace: Optional[str] = None) -> Service:
    return Service(name=name, namespace=namespace, instance_id=f"i-{pid}", decided_by="test", pid=pid,
                   start_ticks=1, container_id=None, systemd_unit=None, attributes=(("service.name", name),))


def peer(name: str) -> dict[str, str]:
    return {"service.peer.name": name, "peer.service": name}


class Parts:
    def __init__(self, tmp_path: Path, max_entries: int = 64) -> None:
        self.root = tree(tmp_path)
        self.listeners = ListenerMap(ProcListing(str(self.root)), min_gap=0.0)
        self.pids = PidMaps(max_entries, 64, lambda: 0.0)
        for pid, name in ((SYSTEMD, "systemd"), (WEB, "web"), (OTHER, "other")):
            self.pids.put(pid, Entry(service(name, pid)))
        self.memo = PeerResolver(self.listeners, self.peek, self.pids)
        self.plain = PeerResolver(self.listeners, self.peek)  # no memo: the reference

    def peek(self, pid: int) -> Optional[Any]:
        entry = self.pids.peek(pid)
        return entry.service if entry is not None else None

    def answer(self) -> dict[str, str]:
        """The memo's answer, checked against the plain lookup's."""
        got = self.memo.attributes_for("127.0.0.1", PORT, CLIENT)
        assert got == self.plain.attributes_for("127.0.0.1", PORT, CLIENT)
        return got


def test_a_repeat_is_the_memo_and_self_calls_stay_empty(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    parts.listeners.refresh()
    first = parts.answer()
    assert first == peer("web")
    assert parts.memo.attributes_for("127.0.0.1", PORT, CLIENT) is first  # memoised
    assert parts.memo.attributes_for("127.0.0.1", PORT, WEB) == {}  # the server calling itself
    assert parts.memo.attributes_for("127.0.0.1", PORT, None) is first


def test_a_miss_is_not_memoised_and_asks_again(tmp_path: Path) -> None:
    """A pid without a cached Service asks the thread to warm it at every call, as before."""
    parts = Parts(tmp_path)
    parts.listeners.refresh()
    parts.pids.exit(WEB)
    parts.listeners.on_new_pid = lambda pid: None
    assert parts.memo.attributes_for("127.0.0.1", PORT, CLIENT) == {}
    assert parts.listeners._warm == {WEB}
    parts.listeners._warm.clear()
    assert parts.memo.attributes_for("127.0.0.1", PORT, CLIENT) == {}
    assert parts.listeners._warm == {WEB}


def test_a_refresh_swap_invalidates(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    parts.listeners.refresh()
    assert parts.answer() == peer("web")
    tcp = parts.root / "proc" / "net" / "tcp"
    tcp.write_text(tcp.read_text().splitlines()[0] + "\n")
    parts.listeners.refresh()  # the listener closed
    assert parts.answer() == {}


def test_a_listen_event_invalidates(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    parts.listeners.refresh()
    assert parts.answer() == peer("web")
    assert parts.listeners.learn("127.0.0.1", PORT, OTHER)  # a new socket on the port
    assert parts.answer() == peer("other")


def test_serve_invalidates(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    assert parts.listeners.learn("127.0.0.1", PORT, SYSTEMD)
    assert parts.answer() == peer("systemd")
    assert parts.listeners.serve(("127.0.0.1", PORT), WEB, SYSTEMD)
    assert parts.answer() == peer("web")


def test_a_per_connection_server_and_its_successor_invalidate(tmp_path: Path) -> None:
    """systemd Accept=yes: the served map names each connection's process by its own Service."""
    parts = Parts(tmp_path)
    assert parts.listeners.learn("127.0.0.1", PORT, SYSTEMD)
    assert parts.listeners.serve(("127.0.0.1", PORT), 4001, SYSTEMD, service("conn-a", 4001))
    assert parts.answer() == peer("conn-a")
    assert parts.listeners.serve(("127.0.0.1", PORT), 4002, SYSTEMD, service("conn-b", 4002, "ns"))
    assert parts.answer() == {**peer("conn-b"), "service.peer.namespace": "ns"}


def test_holder_exited_invalidates(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    assert parts.listeners.learn("127.0.0.1", PORT, SYSTEMD)
    assert parts.listeners.serve(("127.0.0.1", PORT), WEB, SYSTEMD)
    assert parts.answer() == peer("web")
    parts.listeners.holder_exited(WEB)  # the launcher is named again
    assert parts.answer() == peer("systemd")


def test_holder_exited_handing_on_to_an_heir_invalidates(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    assert parts.listeners.learn("127.0.0.1", PORT, WEB)
    assert parts.answer() == peer("web")
    assert parts.listeners.holder_exited(WEB, heirs=[OTHER]) == OTHER
    assert parts.answer() == peer("other")


def test_a_new_reading_of_the_process_invalidates(tmp_path: Path) -> None:
    """PidMaps.put: a Docker answer, or the process read again, renames the peer."""
    parts = Parts(tmp_path)
    parts.listeners.refresh()
    assert parts.answer() == peer("web")
    parts.pids.put(WEB, Entry(service("web-renamed", WEB)))
    assert parts.answer() == peer("web-renamed")


def test_an_exit_invalidates(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    parts.listeners.refresh()
    assert parts.answer() == peer("web")
    parts.pids.exit(WEB)  # a dead pid is no peer until the table says who holds the socket
    assert parts.answer() == {}


def test_an_exec_invalidates(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    parts.listeners.refresh()
    assert parts.answer() == peer("web")
    parts.pids.forget(WEB)  # runs another program now: not read yet
    assert parts.answer() == {}


def test_an_eviction_invalidates(tmp_path: Path) -> None:
    parts = Parts(tmp_path, max_entries=3)
    parts.listeners.refresh()
    assert parts.answer() == peer("web")
    parts.pids.put(4100, Entry(service("a", 4100)))  # the LRU's oldest (systemd) goes
    parts.pids.put(4101, Entry(service("b", 4101)))  # then web
    assert parts.pids.peek(WEB) is None
    assert parts.answer() == {}


def test_a_change_during_a_lookup_is_not_memoised_as_current(tmp_path: Path) -> None:
    """The generations are read before the lookup: a change made while it runs (another thread's)
    leaves a memo that the next call does not trust."""
    parts = Parts(tmp_path)
    parts.listeners.refresh()
    peek = parts.memo.peek

    def peek_then_rename(pid: int) -> Optional[Any]:
        found = peek(pid)
        parts.pids.put(WEB, Entry(service("renamed-meanwhile", WEB)))
        return found

    parts.memo.peek = peek_then_rename
    assert parts.memo.attributes_for("127.0.0.1", PORT, CLIENT) == peer("web")  # read before the change
    parts.memo.peek = peek
    assert parts.answer() == peer("renamed-meanwhile")
