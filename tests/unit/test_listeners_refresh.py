"""What a listener-table refresh reads: the kernel's list every time, /proc's fds only when needed.

Eighteenth round: under a Flask load the agent's listener thread read ~130 fd links a second. The
table's fixture (captured here) has two LISTEN sockets no process holds that the agent can see
(0.0.0.0:2024 and 127.0.0.1:18210, inodes 1195 and 11873: held outside the agent's PID namespace);
each made every refresh walk every process's fds, the periodic ones and those a miss asks for
(a client port that is no listener, a UDP peer such as a local DNS resolver), and a listener the
kernel's LISTEN event had already named was looked for by a walk too.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

from hostagent.identity.listeners import ListenerMap
from hostagent.identity.procfs import ProcFS
from tests.support.clock import ManualClock

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "proc"
ORPHANS = (1195, 11873)  # in the fixture's /proc/net/tcp, in no fixture pid's fds


class CountingProcFS(ProcFS):
    """The real ProcFS over a fixture tree, counting walks (pids()) and the pids whose fds it read."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.walks = 0
        self.fd_reads: list[int] = []
        self.reads: list[object] = []  # in order: a pid whose fds were read, "walk" for pids()

    def pids(self) -> list[int]:
        self.walks += 1
        self.reads.append("walk")
        return super().pids()

    def fd_targets(self, pid: int) -> list[str]:
        self.fd_reads.append(pid)
        self.reads.append(pid)
        return super().fd_targets(pid)

    def before_walk(self) -> list[object]:
        """What was read up to the first walk (the walk's own reads left out)."""
        return self.reads[: self.reads.index("walk") + 1] if "walk" in self.reads else list(self.reads)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / "listeners", tmp_path / "listeners", symlinks=True)
    return tmp_path / "listeners"


def add_listener(root: Path, inode: int, port: int, holder: int) -> None:
    """A new 127.0.0.1:``port`` LISTEN line (the fixture's 18401 line, another port and inode) and
    its socket in ``holder``'s fds."""
    tcp = root / "proc" / "net" / "tcp"
    line = next(x for x in tcp.read_text().splitlines() if "0100007F:47E1 00000000:0000 0A" in x)
    new = line.replace("0100007F:47E1", f"0100007F:{port:04X}").replace(" 20061 ", f" {inode} ")
    tcp.write_text(tcp.read_text() + new + "\n")
    fd = root / "proc" / str(holder) / "fd"
    fd.mkdir(parents=True, exist_ok=True)
    (fd / str(100 + len(list(fd.iterdir())))).symlink_to(f"socket:[{inode}]")


def test_fixture_has_listeners_no_process_holds(root: Path) -> None:
    listeners = ListenerMap(CountingProcFS(str(root)))
    listeners.refresh()
    assert set(ORPHANS) <= set(listeners._listening()) and not set(ORPHANS) & set(listeners._pid_of_inode)


@pytest.mark.parametrize(
    ("seconds", "walks"),
    [
        (0.0, 1),  # the first refresh walks: nothing is known
        (0.5, 1),  # a miss's refresh half a second later: the holders are still nowhere
        (4.9, 1),
        (5.0, 2),  # one interval later: looked for once more (a socket between two processes)
        (14.9, 2),
        (15.0, 3),  # then after 2, 4, 8... intervals
        (34.9, 3),
        (35.0, 4),
        (75.0, 5),
        (155.0, 6),
        (315.0, 7),
        (635.0, 8),
        (954.9, 8),  # capped at 64 intervals (320 s)
        (955.0, 9),
    ],
)
def test_a_listener_nobody_holds_is_looked_for_after_growing_delays(root: Path, seconds: float, walks: int) -> None:
    procfs, clock = CountingProcFS(str(root)), ManualClock(1000.0)
    listeners = ListenerMap(procfs, min_gap=0.0, clock=clock)
    start = clock.now
    # a refresh every 0.5 s (the most misses can ask for) up to ``seconds``
    for step in range(int(seconds * 2) + 1):
        clock.now = start + min(step * 0.5, seconds)
        listeners.refresh()
    assert procfs.walks == walks
    assert listeners.pid_for("127.0.0.1", 18401) == 4242  # what the walks found stays


def test_a_holder_that_appears_is_found_at_the_next_look(root: Path) -> None:
    procfs, clock = CountingProcFS(str(root)), ManualClock(1000.0)
    listeners = ListenerMap(procfs, min_gap=0.0, clock=clock)
    listeners.refresh()
    (root / "proc" / "4242" / "fd" / "9").symlink_to("socket:[11873]")  # 127.0.0.1:18210
    clock.now += 1.0
    listeners.refresh()
    assert listeners.pid_for("127.0.0.1", 18210) is None  # not looked for yet
    clock.now += 4.0
    listeners.refresh()
    assert listeners.pid_for("127.0.0.1", 18210) == 4242
    assert 11873 not in listeners._orphans and 1195 in listeners._orphans


def test_a_miss_for_a_port_nobody_listens_on_reads_no_fds(root: Path) -> None:
    """A client port, or a resolver's UDP port: the kernel's list has no new listener, so the
    refresh the miss asks for reads no process's fds (it walked all of them)."""
    procfs, clock = CountingProcFS(str(root)), ManualClock(1000.0)
    listeners = ListenerMap(procfs, min_gap=0.0, clock=clock)
    listeners.refresh()
    procfs.fd_reads.clear()
    for port in (41002, 41003, 41004):  # new client ports, each asking once
        clock.now += 0.5
        assert listeners.pid_for("127.0.0.1", port) is None
        assert listeners._wake.is_set()  # asked
        listeners._wake.clear()
        listeners.refresh()
    assert (procfs.walks, procfs.fd_reads) == (1, [])


@pytest.mark.parametrize(
    ("learnt", "holder", "reads"),
    [
        (4242, 4242, [4242]),  # the LISTEN event's pid holds it: its fds alone
        (77, 4242, [77, "walk"]),  # named wrong (it passed the socket on): its fds, then a walk
        (None, 4242, ["walk"]),  # no event (listen() picked the port): a walk
    ],
)
def test_a_new_listener_is_looked_for_in_the_learnt_pids_fds_first(root: Path, learnt: Optional[int], holder: int,
                                                                   reads: list[object]) -> None:  # fmt: skip
    procfs, clock = CountingProcFS(str(root)), ManualClock(1000.0)
    listeners = ListenerMap(procfs, min_gap=0.0, clock=clock)
    listeners.refresh()
    procfs.reads = []
    (root / "proc" / "77" / "fd").mkdir(parents=True)
    add_listener(root, 30001, 22430, holder)
    if learnt is not None:
        listeners._own_netns = "net:[1]"  # learn()'s namespace check is test_listeners_learn's
        procfs.net_namespace = lambda pid: "net:[1]"  # type: ignore[method-assign]
        assert listeners.learn("127.0.0.1", 22430, learnt)
    clock.now += 1.0
    listeners.refresh()
    assert listeners.pid_for("127.0.0.1", 22430) == holder
    assert procfs.before_walk() == reads


def test_a_warm_request_alone_does_not_refresh(root: Path) -> None:
    """The thread: warming a peer's Service is all a warm request asks; a loopback miss refreshes
    (counted by cause) without a walk; the first refresh is the only periodic one in a minute."""
    warmed: list[int] = []
    procfs = CountingProcFS(str(root))
    listeners = ListenerMap(procfs, interval=60.0, min_gap=0.0, on_new_pid=warmed.append)
    listeners.start()
    try:
        assert wait_for(lambda: listeners.refreshes == 1)
        warmed.clear()
        listeners.request_warm(4242)
        assert wait_for(lambda: warmed == [4242])
        time.sleep(0.3)
        assert listeners.refreshes == 1
        assert listeners.pid_for("127.0.0.1", 41002) is None
        assert wait_for(lambda: listeners.refreshes == 2)
        assert (listeners.refresh_reasons, procfs.walks, listeners.fd_walks) == ({"periodic": 1, "miss": 1}, 1, 1)
    finally:
        listeners.stop()


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False
