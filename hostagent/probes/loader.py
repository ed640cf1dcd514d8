"""BpfCapture: compile bpf/capture.c once, attach/detach its program groups, drain the ring.

Lifecycle: ``load()`` compiles (bcc, a few seconds) and creates the maps; ``attach(groups)`` loads
each group's programs into the kernel and attaches them to their tracepoints; ``detach(group)``
closes the attachments *and* the program fds, so a disabled group is really gone from
``bpftool prog`` (bcc's own detach_tracepoint leaves the program loaded); re-attaching reloads
from the compiled object without recompiling. Maps (sockets, muted, drops, the ring) live as
long as the BpfCapture. A detached socket group stops maintaining them (closes, exits, forks go
unseen), so re-attaching it resets the socket-side maps and re-seeds them from /proc.

Consuming: ``poll`` waits on the ring's fd (epoll) and reads the records straight from its
mapping (hostagent.probes.ring), decoding each in place; with ``raw_records=True`` on_event gets
each record's bytes instead of a CaptureEvent (recordings for bench/capacity.py).

Threading: ``poll`` runs on one thread (the ring-buffer thread); ``on_event`` runs inside it and
must not block. ``mute``/``drop_counts`` touch only BPF maps and are safe from other threads.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hostagent.kernel import HeadersChoice, ensure_tracefs, find_kernel_headers
from hostagent.kernel.btf import SockOffsets, sock_offsets
from hostagent.model import CaptureEvent
from hostagent.probes import data_path
from hostagent.probes import events as ev
from hostagent.probes.fdinfo import read_fdinfo
from hostagent.probes.missed import close_record, missed_closes
from hostagent.probes.registry import (
    DATA_PROGRAMS,
    DETACHED_BACKED_OFF,
    GROUP_PROGRAMS,
    SOCKET_DATA,
    SOCKET_DATA_OPTIONAL,
    SOCKET_GROUP,
    SYSCALL_DATA,
)
from hostagent.probes.ring import Pacer, RingReader, ring_size_of
from hostagent.probes.seed import seed_sockets
from hostagent.probes.sources import bpf_dir
from hostagent.yielding import CpuYield

log = logging.getLogger(__name__)

MAX_PAYLOAD_LIMIT = 32768  # 2 * payload + tail (512) + header must fit one array value; verified up to here

# A drain may yield the CPU between steps (hostagent.yielding). 2 KiB is 10-20 records, ~0.1-0.2 ms
# of the pipeline live: with 8 KiB steps one step still ran past 1.5 ms while a nice-0 process
# waited (perf sched: the poll thread's share of such stalls under Flask 57-60 ms in 3 s, 13-23 ms
# with 2 KiB); a step costs ~20 ns per record more than one drain in a single step.
DRAIN_STEP_BYTES = 2 << 10

# The programs the socket group's data programs tail-call (bpf/capture.c, "HTTP/2 frame chains" and
# "tail copy"): (function, raw tracepoint type or not, the program array it is called through).
_WALKERS = (
    (b"sock__h2_walk_raw", True, b"h2_walk_raw"),
    (b"sock__h2_walk_tp", False, b"h2_walk_tp"),  # the syscall path's only (its tracepoint programs)
    (b"sock__tail_raw", True, b"tail_raw"),  # the socket path's only ("tail copy")
)
# bpf/capture.c's DATA_PATH bits: the data paths whose programs are compiled whole
_PATH_BITS = {SOCKET_DATA: 1, SYSCALL_DATA: 2}
# Programs loaded (verified) at once, at most this many threads: the kernel's verifier runs in the
# loading thread, seconds in all for the socket group on a slow VM, most of it in three programs.
_LOAD_THREADS = 4
# The socket path's datagram exits (a receive is deferred to them only while they are attached).
_DGRAM_EXITS = ("sys_exit_recvfrom", "sys_exit_recvmsg")


@dataclass
class ProbeState:
    state: str = "detached"  # "attached" | "detached" | "failed"
    reason: str = ""
    programs: int = 0  # programs loaded for this group
    attachments: int = 0  # tracepoints attached


@dataclass
class _Group:
    perf_fds: list[int] = field(default_factory=list)  # tracepoint perf events
    raw_fds: list[int] = field(default_factory=list)  # raw tracepoint links (closing detaches)
    funcs: list[bytes] = field(default_factory=list)
    # the socket path's programs a backed-off agent detaches: (tracepoint, function, fd or -1)
    lean: list[tuple[str, bytes, int]] = field(default_factory=list)


def _attached_by_kind(lean: list[tuple[str, bytes, int]]) -> tuple[list[int], list[int]]:
    """The attached fds of ``_Group.lean``, as (tracepoint perf events, raw tracepoint links)."""
    perf = [fd for tp, _, fd in lean if fd >= 0 and not tp.startswith("raw:")]
    raw = [fd for tp, _, fd in lean if fd >= 0 and tp.startswith("raw:")]
    return perf, raw


def _raw_record(buf: Any, off: int, length: int) -> bytes:
    """A record as the kernel wrote it (header + payload), for recordings (bench/capacity.py)."""
    return bytes(buf[off : off + length])


def _prog_type(raw: bool) -> int:
    """bcc's program type of a raw tracepoint's program or of a tracepoint's (a perf event's)."""
    from bcc import BPF

    return int(BPF.RAW_TRACEPOINT if raw else BPF.TRACEPOINT)


def possible_cpus(path: Path = Path("/sys/devices/system/cpu/possible")) -> int:
    """Number of possible CPU ids ("0-3,5" -> 6): the bound of bpf_get_smp_processor_id()."""
    try:
        text = path.read_text().strip()
    except OSError:
        return os.cpu_count() or 1
    top = 0
    for part in text.split(","):
        top = max(top, int(part.split("-")[-1]))
    return top + 1


class BpfCapture:
    def __init__(
        self,
        *,
        on_event: Callable[[CaptureEvent], None],
        payload_bytes: int = 1024,
        ring_bytes: int = 2 << 20,
        headers: Optional[HeadersChoice] = None,
        configured_headers: Optional[str] = None,
        runtime_dir: Path = Path("/run/hostagent"),
        wake_fraction: float = 0.25,
        self_tgid: Optional[int] = None,
        raw_records: bool = False,
        data_hooks: str = "auto",
    ) -> None:
        if not 1 <= payload_bytes <= MAX_PAYLOAD_LIMIT:
            raise ValueError(f"payload_bytes must be 1..{MAX_PAYLOAD_LIMIT}, got {payload_bytes}")
        pages = ring_bytes // 4096
        if pages < 1 or pages & (pages - 1) or ring_bytes % 4096:
            raise ValueError(f"ring_bytes must be a power-of-two number of 4 KiB pages, got {ring_bytes}")
        self.payload_bytes = payload_bytes
        self.ring_bytes = ring_bytes
        self.on_event = on_event
        self._headers = headers
        self._configured_headers = configured_headers
        self._runtime_dir = runtime_dir
        self._wake_bytes = int(ring_bytes * wake_fraction)
        self.self_tgid = os.getpid() if self_tgid is None else self_tgid
        self._bpf: Any = None
        self._ring: Optional[RingReader] = None
        self.raw_records = raw_records
        self.data_hooks = data_hooks  # [probes] data_hooks: "auto" | "socket" | "syscalls"
        self.data_path = ""  # SOCKET_DATA or SYSCALL_DATA once the socket group was first attached
        self._groups: dict[str, _Group] = {}
        self.states: dict[str, ProbeState] = {g: ProbeState() for g in GROUP_PROGRAMS}
        self.compile_seconds = 0.0
        self._socket_maps_stale = False  # the socket group was detached: its maps went stale
        self._reseeded: Optional[int] = None  # attach() re-seeded: what seed_existing_sockets returns
        self.events_seen = 0
        self.callback_errors = 0
        self.on_backlog: Optional[Callable[[int], object]] = None  # told the unread bytes as a drain goes
        self._pause = CpuYield()
        self.sock_offsets: Optional[SockOffsets] = None  # found at the first cflags()
        self.backed_off = False  # set_backed_off: DETACHED_BACKED_OFF's programs are not attached
        self._dgram_gen = 0  # CONF_DGRAM_EXIT as last written: odd while the datagram exits are attached
        self.closes_settled = 0  # closes missed while backed off, found at full effort (hostagent.probes.missed)
        self._missed: list[bytes] = []  # their CLOSE records, delivered after the next drain
        self._compiled_paths = 0  # _PATH_BITS of the data paths load() compiled whole
        self._polled = False  # poll() has read the ring: no recompile from here on (_recompile)

    # ---- load -------------------------------------------------------------------------------

    def cflags(self) -> list[str]:
        return [
            # bcc passes -g (debug info + BTF for the verifier's source lines) before these; off,
            # the compile takes ~20% less time and ~30 MiB less peak memory.
            "-g0",
            f"-I{bpf_dir()}",
            f"-DMAX_PAYLOAD={self.payload_bytes}",
            f"-DSELF_TGID={self.self_tgid}",
            f"-DRING_PAGES={self.ring_bytes // 4096}",
            f"-DWAKE_BYTES={self._wake_bytes}",
            f"-DNR_CPUS={possible_cpus()}",
            f"-DDATA_PATH={self._compiled_paths}",
            *self._sock_offsets().cflags(),
        ]

    def _plan_data_path(self) -> int:
        """The data paths whose programs load() compiles whole (bpf/capture.c DATA_PATH): the one
        the socket group will take, as data_path.choose() decides it (the path it took, once it
        did); both when the choice fails (the group fails at attach and says why, as before). On
        the socket path under "auto" the syscall tracepoints' programs are compiled only if the
        socket layer's fail at the first attach (_recompile)."""
        path = self.data_path
        if not path:
            try:
                path, _ = data_path.choose(self.data_hooks)
            except ValueError:
                return _PATH_BITS[SOCKET_DATA] | _PATH_BITS[SYSCALL_DATA]
        return _PATH_BITS[path]

    def _sock_offsets(self) -> SockOffsets:
        """Where this kernel keeps the struct sock fields adopt() reads past the fixed head (BTF,
        ~10-30 ms), once; logged, as the programs do without what is missing."""
        if self.sock_offsets is None:
            self.sock_offsets = sock_offsets()
            log.info("struct sock offsets from BTF: %s", self.sock_offsets)
        return self.sock_offsets

    def load(self) -> float:
        """Compile and create the maps (no program is attached yet). Returns compile seconds."""
        from bcc import BPF  # the distribution's bcc; imported late so unit tests need no bcc

        ensure_tracefs()
        if self._headers is None and not os.environ.get("BCC_KERNEL_SOURCE"):
            self._headers = find_kernel_headers(self._configured_headers, self._runtime_dir)
        text = (bpf_dir() / "capture.c").read_text()
        self._compiled_paths = self._plan_data_path()
        t0 = time.monotonic()
        self._bpf = BPF(text=text.encode(), cflags=self.cflags())
        elapsed = time.monotonic() - t0
        self.compile_seconds += elapsed
        log.info(
            "compiled bpf/capture.c in %.2f s (payload %d B, ring %d KiB, data programs: %s)",
            elapsed,
            self.payload_bytes,
            self.ring_bytes >> 10,
            " and ".join(p for p, bit in _PATH_BITS.items() if self._compiled_paths & bit),
        )
        ring = self._bpf[b"events"]
        # ring_ref[0] = the ring itself, so the C can ask how full it is (bpf_ringbuf_query)
        self._bpf[b"ring_ref"][ctypes.c_int(0)] = ctypes.c_int(ring.map_fd)
        self._open_ring(ring.map_fd)
        return self.compile_seconds

    def _open_ring(self, map_fd: int) -> None:
        """Map the ring for RingReader (libbpf's layout, read from Python: no per-record ctypes
        callback). The map's own size wins over ring_bytes if they ever differ."""
        size = ring_size_of(map_fd) or self.ring_bytes
        self._ring = RingReader(map_fd, size)

    def _failed(self) -> None:
        # A record that fails to decode or to be handled costs that record only; say it a few times.
        self.callback_errors += 1
        if self.callback_errors <= 3:
            log.exception("on_event failed")

    # ---- attach / detach --------------------------------------------------------------------

    def attach(self, groups: set[str]) -> dict[str, ProbeState]:
        """Attach these groups (already attached ones are left alone); the others keep their state.
        A group that fails is rolled back and reported as failed; the rest still attach."""
        if self._bpf is None:
            raise RuntimeError("load() first")
        for g in sorted(groups):
            if g not in GROUP_PROGRAMS:
                self.states[g] = ProbeState("failed", f"unknown program group {g!r}")
                continue
            if self.states[g].state == "attached":
                continue
            stale = g == SOCKET_GROUP and self._socket_maps_stale
            if stale:
                self._reset_socket_maps()  # before attaching: whatever is learnt from now on stays
            self.states[g] = self._attach_group(g)
            if g == SOCKET_GROUP and self.states[g].state == "failed" and self.data_path == SOCKET_DATA \
                    and self.data_hooks == "auto":
                log.warning("socket-layer data programs failed (%s); using the syscall tracepoints",
                            self.states[g].reason)
                self.data_path = SYSCALL_DATA
                self.states[g] = self._attach_group(g)
            if stale and self.states[g].state == "attached":
                self._socket_maps_stale = False
                self._reseeded = self._seed()
        return dict(self.states)

    def _recompile(self) -> Optional[ProbeState]:
        """The socket group's data path is one load() did not compile (the socket layer's programs
        failed under "auto"): compile again with its programs, the maps and the ring anew, and
        attach again the groups attached meanwhile; None when done, for the caller to go on with
        the socket group. Only before the ring was first read (the start-up attach): later the
        maps hold what the running agent learnt and another thread reads the ring, so the group
        fails and says how to start with that path instead."""
        if self._polled:
            return ProbeState("failed", f"the {self.data_path} data programs were not compiled at start (the "
                              f"socket layer's were planned); restart with [probes] data_hooks = \"{self.data_path}\"")
        attached = [g for g, st in self.states.items() if st.state == "attached"]
        self.close()
        self.load()
        for g in attached:
            self.states[g] = self._attach_group(g)
        return None

    # maps only the socket group writes; "muted" is pruned after re-seeding instead
    _SOCKET_MAPS = (b"sockets", b"recent", b"fork_link", b"no_inherit", b"connecting", b"accepted",
                    b"handshakes", b"adopted")

    def _reset_socket_maps(self) -> None:
        for name in self._SOCKET_MAPS:
            self._bpf[name].clear()

    def _programs(self, group: str) -> list[tuple[str, str]]:
        """The group's (tracepoint, function) pairs; the socket group's end with its data path's."""
        progs = list(GROUP_PROGRAMS[group])
        if group != SOCKET_GROUP:
            return progs
        for tp, fn_name in DATA_PROGRAMS[self.data_path]:
            event = tp.split(":")[1]
            if event in SOCKET_DATA_OPTIONAL and not data_path.tracepoint_exists(event):
                log.info("no %s tracepoint (Linux < 6.12): bytes sent are stamped when the send returns", event)
                continue
            progs.append((tp, fn_name))
        return progs

    def _attach_group(self, group: str) -> ProbeState:
        t0 = time.monotonic()
        if group == SOCKET_GROUP and not self.data_path:
            try:
                self.data_path, why = data_path.choose(self.data_hooks)
            except ValueError as e:
                log.warning("probe group %s cannot attach: %s", group, e)
                return ProbeState("failed", str(e))
            log.info("socket data from %s", why)
        if group == SOCKET_GROUP and not self._compiled_paths & _PATH_BITS[self.data_path]:
            refused = self._recompile()
            if refused is not None:
                log.warning("probe group %s cannot attach: %s", group, refused.reason)
                return refused
        grp = _Group()
        self._groups[group] = grp
        try:
            loads = [(fn_name.encode(), _prog_type(tp.startswith("raw:"))) for tp, fn_name in self._programs(group)]
            if group == SOCKET_GROUP:
                loads[:0] = [(name, _prog_type(raw)) for name, raw, _ in self._walkers()]
            failed_loads = self._load_at_once(loads)
            for name, _ in loads:  # unloaded with the group (_release) if a later step fails
                if name in self._bpf.funcs and name not in grp.funcs:
                    grp.funcs.append(name)
            if group == SOCKET_GROUP:
                self._load_walkers(grp, failed_loads)
                # before the datagram exits attach: a receive is deferred to them only while odd
                self._set_dgram_exit(self.data_path == SOCKET_DATA and not self.backed_off)
            for tp, fn_name in self._programs(group):
                name = fn_name.encode()
                if name in failed_loads:
                    raise failed_loads[name]
                fn = self._bpf.load_func(name, _prog_type(tp.startswith("raw:")))
                if name not in grp.funcs:
                    grp.funcs.append(name)
                lean = group == SOCKET_GROUP and self.data_path == SOCKET_DATA and \
                    tp.split(":")[1] in DETACHED_BACKED_OFF
                if lean and self.backed_off:
                    grp.lean.append((tp, name, -1))
                    continue
                fd = self._attach_one(tp, fn.fd, fn_name)
                if lean:
                    grp.lean.append((tp, name, fd))
                else:
                    (grp.raw_fds if tp.startswith("raw:") else grp.perf_fds).append(fd)
        except Exception as e:
            self._release(group)
            log.warning("probe group %s failed to attach: %s", group, e)
            return ProbeState("failed", str(e).splitlines()[0][:300])
        if group == SOCKET_GROUP:
            self.set_socket_enabled(True)
        attached = len(grp.perf_fds) + len(grp.raw_fds) + sum(fd >= 0 for _, _, fd in grp.lean)
        log.info("attached group %s: %d programs on %d tracepoints in %.3f s",
                 group, len(grp.funcs), attached, time.monotonic() - t0)
        return ProbeState("attached", "", len(grp.funcs), attached)

    @staticmethod
    def _attach_one(tp: str, prog_fd: int, fn_name: str) -> int:
        """Attaches a loaded program to "category:event" ("raw:event": a raw tracepoint); the fd
        whose close detaches it."""
        from bcc.libbcc import lib

        cat, event = tp.split(":")
        if cat == "raw":
            fd = lib.bpf_attach_raw_tracepoint(prog_fd, event.encode())
        else:
            fd = lib.bpf_attach_tracepoint(prog_fd, cat.encode(), event.encode())
        if fd < 0:
            raise OSError(f"attaching {fn_name} to {tp} failed: {os.strerror(ctypes.get_errno())}")
        return int(fd)

    def _set_dgram_exit(self, attached: bool) -> None:
        """CONF_DGRAM_EXIT to a new value, odd when the datagram exits are (about to be) attached."""
        self._dgram_gen += 1 if (self._dgram_gen & 1) != attached else 2
        self._bpf[b"config"][ctypes.c_int(ev.CONF_DGRAM_EXIT)] = ctypes.c_uint32(self._dgram_gen & 0xFFFFFFFF)

    def set_backed_off(self, backed_off: bool) -> int:
        """The agent backed off from a hopeless overload (hostagent.overload): its kernel side sheds
        nearly every data call, and the socket path's programs that do nothing for a shed call
        (registry.DETACHED_BACKED_OFF: a send's start stamp, the datagram exits, close) only cost the
        traced applications their dispatch. Backed off, they are detached (still loaded); taking full
        effort again re-attaches them. Meanwhile a captured send is stamped when it returns (as on
        kernels without tcp_sendmsg_locked), a datagram receive is counted as lost with the ring's
        overload (bpf/capture.c, sock_data), and closes go unseen: once close is back, the sockets
        closed meanwhile are found in /proc and closed (_settle_missed_closes). Returns how many
        attachments changed."""
        if backed_off == self.backed_off:
            return 0
        self.backed_off = backed_off
        grp = self._groups.get(SOCKET_GROUP)
        if grp is None or not grp.lean:
            return 0
        if backed_off:
            self._set_dgram_exit(False)  # first: no receive is deferred to an exit about to go
            perf, raw = _attached_by_kind(grp.lean)
            self._close_attachments(perf, raw)
            grp.lean = [(tp, name, -1) for tp, name, _ in grp.lean]
            held = len(perf) + len(raw)
            log.info("backed off: %d programs detached (a send's start stamp, the datagram exits, close)", held)
            return held
        lean, failed = [], ""
        closes_unseen = any(fd < 0 and tp.endswith(":sys_enter_close") for tp, _, fd in grp.lean)
        for tp, name, fd in grp.lean:
            if fd < 0:
                try:
                    fd = self._attach_one(tp, self._bpf.funcs[name].fd, name.decode())
                except OSError as e:  # left detached: what it did stays done as while backed off
                    failed = str(e)
            lean.append((tp, name, fd))
        grp.lean = lean
        if all(fd >= 0 for tp, _, fd in lean if tp.split(":")[1] in _DGRAM_EXITS):
            self._set_dgram_exit(True)  # last: the exits are there for what is deferred from now on
        if closes_unseen and any(fd >= 0 and tp.endswith(":sys_enter_close") for tp, _, fd in lean):
            self._settle_missed_closes()
        if failed:
            log.warning("full effort: re-attaching failed (%s); sends stamped at their end, datagram "
                        "receives counted as lost, closes unseen until the socket group is attached again",
                        failed)
        else:
            log.info("full effort: %d programs re-attached", len(lean))
        return sum(fd >= 0 for _, _, fd in lean)

    def _settle_missed_closes(self, proc_root: Path = Path("/proc")) -> int:
        """Right after close was attached again: the sockets closed while it was not (their entries
        made before now, their fds no longer those inet sockets in /proc: hostagent.probes.missed)
        get their entries closed as the program would have closed them (CLOSED_GEN, the muted mark
        dropped) and their CLOSE records queued for the tracker (the next poll delivers them after
        its drain: after the calls the ring still holds from before). An entry rewritten since it
        was read (its fd number's next socket) is left alone. Returns how many were settled."""
        before = time.monotonic_ns()  # CLOCK_MONOTONIC, as bpf_ktime_get_ns(): entries older than
        sockets = self._bpf[b"sockets"]  # this were made while close may have been detached
        try:  # one bpf() call per batch, not two per entry (the map holds up to 65,536)
            items = list(sockets.items_lookup_batch())
        except Exception:  # kernels or bcc without batch lookups: entry by entry
            items = list(sockets.items())
        entries = []
        for k, v in items:
            key = k if isinstance(k, int) else k.value  # the batch gives plain ints
            entries.append((key >> 32, key & 0xFFFFFFFF, ev.SockInfo.from_buffer_copy(bytes(v))))
        muted = self._bpf[b"muted"]
        n = 0
        for pid, fd, info in missed_closes(entries, before, proc_root, self.self_tgid):
            key = self._key(pid, fd)
            try:
                now = ev.SockInfo.from_buffer_copy(bytes(sockets[key]))
            except KeyError:
                continue
            if now.gen != info.gen or now.ts != info.ts:
                continue  # closed or replaced by the programs since it was read
            now.gen = ev.CLOSED_GEN
            sockets[key] = sockets.Leaf.from_buffer_copy(bytes(now))
            try:
                del muted[key]
            except KeyError:
                pass
            self._missed.append(close_record(pid, info, time.monotonic_ns()))
            n += 1
        self.closes_settled += n
        if n:
            log.info("full effort: %d sockets closed while close() was detached, closed now (%d entries "
                     "checked in %.3f s)", n, len(entries), (time.monotonic_ns() - before) / 1e9)
        return n

    def _deliver_missed(self) -> None:
        """The CLOSE records _settle_missed_closes made, to on_event as the ring's records go."""
        records, self._missed = self._missed, []
        decode: Callable[[Any, int, int], Any] = _raw_record if self.raw_records else ev.decode_at
        for rec in records:
            try:
                self.on_event(decode(rec, 0, len(rec)))
            except Exception:
                self._failed()

    def _load_at_once(self, loads: list[tuple[bytes, int]]) -> dict[bytes, Exception]:
        """Loads these (function, program type) pairs not loaded yet on a few threads, the largest
        first: bcc's load is one ctypes call that holds no GIL, and the verifier runs in the calling
        thread (the socket group: 2.6 s one after the other on a slow 2-core VM, most of it three
        programs). Returns each failure by function name, for the caller to raise in its own order
        as a sequential load would have (the rest stay loaded, as then)."""
        from bcc import lib

        todo = list(dict.fromkeys((n, t) for n, t in loads if n not in self._bpf.funcs))
        threads = min(len(todo), _LOAD_THREADS, len(os.sched_getaffinity(0)))
        failed: dict[bytes, Exception] = {}
        if threads < 2:
            return failed  # the caller's own load_func calls do it

        def load(item: tuple[bytes, int]) -> None:
            try:
                self._bpf.load_func(*item)
            except Exception as e:  # handed to the caller, which raises it in its order
                failed[item[0]] = e

        todo.sort(key=lambda item: -int(lib.bpf_function_size(self._bpf.module, item[0])))
        with ThreadPoolExecutor(threads, thread_name_prefix="bpf-verify") as pool:
            list(pool.map(load, todo))
        return failed

    def _walkers(self) -> tuple[tuple[bytes, bool, bytes], ...]:
        """The walkers this data path's programs tail-call: the raw ones on the socket path (no
        tracepoint program there walks HTTP/2 frames: its datagram and *mmsg exits carry none),
        the tracepoint one on the syscall path."""
        raw = self.data_path == SOCKET_DATA
        return tuple(w for w in _WALKERS if w[1] == raw)

    def _load_walkers(self, grp: _Group, failed_loads: Optional[dict[bytes, Exception]] = None) -> None:
        """Loads the walkers into their program arrays before any data program can call them (a
        call that finds none sends its event unwalked and the connection's frames lose track)."""
        for name, raw, table in self._walkers():
            if failed_loads and name in failed_loads:
                raise failed_loads[name]
            fn = self._bpf.load_func(name, _prog_type(raw))
            if name not in grp.funcs:
                grp.funcs.append(name)
            self._bpf[table][ctypes.c_int(0)] = ctypes.c_int(fn.fd)

    def detach(self, group: str) -> ProbeState:
        """Detach and unload the group's programs (they disappear from `bpftool prog`)."""
        if group == SOCKET_GROUP and self._bpf is not None:
            self.set_socket_enabled(False)
            if self.states[group].state == "attached":
                self._socket_maps_stale = True
        self._release(group)
        self.states[group] = ProbeState("detached")
        log.info("detached group %s", group)
        return self.states[group]

    def _release(self, group: str) -> None:
        grp = self._groups.pop(group, None)
        if grp is None:
            return
        if group == SOCKET_GROUP:  # a program array's reference would keep the walkers loaded
            for _, _, table in _WALKERS:
                try:
                    del self._bpf[table][ctypes.c_int(0)]
                except KeyError:
                    pass
        lean_perf, lean_raw = _attached_by_kind(grp.lean)
        self._close_attachments(grp.perf_fds + lean_perf, grp.raw_fds + lean_raw)
        for name in grp.funcs:
            fn = self._bpf.funcs.pop(name, None)
            if fn is not None:
                os.close(fn.fd)

    @staticmethod
    def _close_attachments(perf_fds: list[int], raw_fds: list[int]) -> None:
        """Each close unregisters a tracepoint and waits for an RCU grace period (~70 ms here, 2.3 s
        for the socket group one after the other); closed from threads the waits overlap (1.1 s)."""
        from bcc.libbcc import lib

        fds = len(perf_fds) + len(raw_fds)
        if fds:
            with ThreadPoolExecutor(min(fds, 32), thread_name_prefix="detach") as pool:
                perf = pool.map(lib.bpf_close_perf_event_fd, perf_fds)  # both submitted at once
                raw = pool.map(os.close, raw_fds)
                for results in (perf, raw):
                    list(results)  # an error in a close is raised here, as before

    def program_ids(self, group: str) -> list[int]:
        """Kernel ids of the group's loaded programs (as `bpftool prog show` lists them)."""
        grp = self._groups.get(group)
        if grp is None:
            return []
        ids = []
        for name in grp.funcs:
            fn = self._bpf.funcs.get(name)
            if fn is None:
                continue
            prog_id = read_fdinfo(fn.fd).get("prog_id")
            if prog_id is not None:
                ids.append(int(prog_id))
        return ids

    def set_socket_enabled(self, enabled: bool) -> None:
        """The in-kernel switch: off, socket programs keep their maps up to date but emit nothing."""
        self._bpf[b"config"][ctypes.c_int(ev.CONF_SOCKET_ENABLED)] = ctypes.c_uint32(int(enabled))

    # ---- consume ----------------------------------------------------------------------------

    def poll(self, timeout_ms: int = 10, budget_s: Optional[float] = None) -> int:
        """Wait up to timeout_ms for a wake-up (the C only wakes us when the ring is filling),
        then drain what was committed by then, or as much of it as ``budget_s`` of wall time
        allows (a burst of the overload backoff); returns the number of events delivered to
        on_event (or that failed: see callback_errors)."""
        ring = self._ring
        if ring is None:
            time.sleep(timeout_ms / 1000)
            return 0
        self._polled = True
        if timeout_ms > 0:
            ring.wait(timeout_ms)
        decode: Callable[[Any, int, int], Any] = _raw_record if self.raw_records else ev.decode_at
        pause = self._pause
        pause.start()
        watch = self.on_backlog
        if watch is not None:  # what the producers had committed and this drain will read: how far behind
            watch(ring.unread())
        # between steps (compiled): the yields, the backlog again at each yield (a drain far behind is long on
        # a starved CPU), the end of the budget (a burst of the overload backoff)
        between = Pacer(ring, pause, watch, time.monotonic() + budget_s if budget_s is not None else None)
        n = ring.drain(decode, self.on_event, self._failed, DRAIN_STEP_BYTES, between)
        self.events_seen += n
        if self._missed:
            self._deliver_missed()
        return n

    def ring_positions(self) -> Optional[tuple[int, int]]:
        """(producer, consumer) positions of the ring, None once closed; safe from another thread
        (two loads; hostagent.starvation only compares them)."""
        ring = self._ring
        if ring is None:
            return None
        try:
            return ring.producer_pos(), ring.consumer_pos
        except ValueError:  # closed meanwhile: its views are released
            return None

    # ---- maps Python writes -----------------------------------------------------------------

    @staticmethod
    def _key(pid: int, fd: int) -> ctypes.c_uint64:
        return ctypes.c_uint64((pid << 32) | (fd & 0xFFFFFFFF))

    def mute(self, pid: int, fd: int) -> None:
        """Stop copying data for this connection, in the kernel (until it is closed)."""
        self._bpf[b"muted"][self._key(pid, fd)] = ctypes.c_uint8(1)
        # then a new epoch: entries found not muted before it look muted up again (capture.c)
        epoch = self._bpf[b"mute_epoch"]
        key = ctypes.c_int(0)
        epoch[key] = ctypes.c_uint32((epoch[key].value % 0xFFFFFFFF) + 1)

    def unmute(self, pid: int, fd: int) -> None:
        try:
            del self._bpf[b"muted"][self._key(pid, fd)]
        except KeyError:
            pass

    def socket_info(self, pid: int, fd: int) -> Optional[ev.SockInfo]:
        """What the kernel side knows about (pid, fd), or None when it is not tracked."""
        try:
            v = self._bpf[b"sockets"][self._key(pid, fd)]
        except KeyError:
            return None
        info = ev.SockInfo.from_buffer_copy(bytes(v))
        return None if info.gen == ev.CLOSED_GEN else info

    @staticmethod
    def _tracked(sockets: Any, key: ctypes.c_uint64) -> bool:
        """Whether the sockets map has a live entry at key (a closed socket's slot is not one)."""
        try:
            return int(sockets[key].gen) != ev.CLOSED_GEN
        except KeyError:
            return False

    def seed_existing_sockets(self, proc_root: str = "/proc") -> int:
        """Track inet sockets that were open before we attached; returns how many were added.
        Right after attach() re-attached the socket group this was done already: returns that
        count without walking /proc again."""
        if self._reseeded is not None:
            n, self._reseeded = self._reseeded, None
            return n
        return self._seed(proc_root)

    def _seed(self, proc_root: str = "/proc") -> int:
        sockets = self._bpf[b"sockets"]
        gens = self._bpf[b"proc_gen"]
        recent = self._bpf[b"recent"]
        by_pid: dict[int, list[int]] = {}

        def gen_of(pid: int) -> int:
            try:
                return int(gens[ctypes.c_uint32(pid)].value)
            except KeyError:
                return 0

        n = 0
        seeded: set[int] = set()
        for pid, fd, info in seed_sockets(Path(proc_root), skip_pid=self.self_tgid):
            val = ev.SockInfo(
                gen=gen_of(pid), ts=0, family=info.family, sock_type=info.sock_type,
                peer_port=info.peer_port, local_port=info.local_port, id_fd=fd,
            )  # fmt: skip
            ctypes.memmove(val.peer_addr, info.peer_addr.ljust(16, b"\0"), 16)
            ctypes.memmove(val.local_addr, info.local_addr.ljust(16, b"\0"), 16)
            key = self._key(pid, fd)
            seeded.add(key.value)
            by_pid.setdefault(pid, []).append(fd)
            if self._tracked(sockets, key):
                continue  # learnt by the programs since they attached: more exact than /proc
            sockets[key] = sockets.Leaf.from_buffer_copy(bytes(val))
            n += 1
        for pid, fds in by_pid.items():  # their forks are followed from now on (bpf: remember_fd)
            last = fds[-ev.RECENT_FDS :]
            rec = ev.RecentFds(next=len(last) % ev.RECENT_FDS)
            for i in range(ev.RECENT_FDS):
                rec.fd[i] = last[i] if i < len(last) else ev.NO_FD
            recent[ctypes.c_uint32(pid)] = recent.Leaf.from_buffer_copy(bytes(rec))
        muted = self._bpf[b"muted"]
        for k in [k for k in muted.keys() if k.value not in seeded]:  # closed while we looked away
            try:
                del muted[k]
            except KeyError:
                pass
        log.info("seeded %d existing inet sockets from %s", n, proc_root)
        return n

    def drop_counts(self) -> dict[str, int]:
        drops = self._bpf[b"drops"]  # per CPU (bpf/capture.c): summed here
        out = {name: int(drops.sum(ctypes.c_int(i)).value) for i, name in enumerate(ev.DROP_CAUSES)}
        out["callback_errors"] = self.callback_errors
        return out

    def close(self) -> None:
        for g in list(self._groups):
            self._release(g)
            self.states[g] = ProbeState("detached")
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def __enter__(self) -> BpfCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
