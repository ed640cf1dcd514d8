"""Probe names (as in the config's [probes] enabled and the admin API) and the BPF program
groups each one needs. Several probes share one group: the socket group captures every inet
socket's bytes and the protocol stage decides what they are, so "http" and "redis" both need it.
"""

from __future__ import annotations

SOCKET_GROUP = "socket"
PROCESS_GROUP = "process"

# probe name -> program groups it needs
PROBE_GROUPS: dict[str, frozenset[str]] = {
    "http": frozenset({SOCKET_GROUP}),
    "http2": frozenset({SOCKET_GROUP}),
    "postgres": frozenset({SOCKET_GROUP}),
    "mysql": frozenset({SOCKET_GROUP}),
    "redis": frozenset({SOCKET_GROUP}),
    "dns": frozenset({SOCKET_GROUP}),
    "identity": frozenset({PROCESS_GROUP}),
}
PROBE_NAMES: tuple[str, ...] = tuple(PROBE_GROUPS)

# group -> (tracepoint, BPF function) pairs, in attach order: lifecycle programs first so a
# socket is known before data on it is looked up (the socket group's opens and TCP states come
# with its data path's programs, first among them). "raw:<name>" is a raw tracepoint.
_DATA = ("read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
         "recvmmsg", "sendmmsg", "sendfile64")  # fmt: skip
_MMSG = ("recvmmsg", "sendmmsg")
_LIFECYCLE: tuple[tuple[str, str], ...] = (
    ("sched:sched_process_exit", "sock__process_exit"),
    ("sched:sched_process_fork", "sock__fork"),
    ("sched:sched_process_exec", "sock__exec"),
    ("syscalls:sys_enter_close_range", "sock__enter_close_range"),
    ("syscalls:sys_enter_bind", "sock__enter_bind"),
    ("syscalls:sys_exit_bind", "sock__exit_bind"),
    ("syscalls:sys_enter_close", "sock__enter_close"),
)


# socket(), connect(), accept(), the TCP states and the copies of an fd (dup, dup2, dup3,
# fcntl(F_DUPFD, F_DUPFD_CLOEXEC)), by data path: with the syscall tracepoints an enter program
# saves each call's arguments for its exit; on the socket path (x86-64, Linux >= 6.3) the exits
# read them from the saved user registers, as the socket-layer data programs do, and the enter
# programs go (twenty-third round; the copies' in the twenty-seventh: every fcntl() of every
# process paid an enter hit for the rare F_DUPFD, two per request in gunicorn).
_DUPS = ("dup", "dup2", "dup3", "fcntl")
_OPENS_SYSCALL: tuple[tuple[str, str], ...] = (
    *((f"syscalls:sys_enter_{s}", "sock__enter_dup") for s in ("dup", "dup2", "dup3")),
    ("syscalls:sys_enter_fcntl", "sock__enter_fcntl"),  # F_DUPFD, F_DUPFD_CLOEXEC
    *((f"syscalls:sys_exit_{s}", "sock__exit_dup") for s in _DUPS),
    ("sock:inet_sock_set_state", "sock__set_state"),
    ("syscalls:sys_enter_socket", "sock__enter_socket"),
    ("syscalls:sys_exit_socket", "sock__exit_socket"),
    ("syscalls:sys_enter_connect", "sock__enter_connect"),
    ("syscalls:sys_exit_connect", "sock__exit_connect"),
    ("syscalls:sys_enter_accept", "sock__enter_accept"),
    ("syscalls:sys_exit_accept", "sock__exit_accept"),
    ("syscalls:sys_enter_accept4", "sock__enter_accept4"),
    ("syscalls:sys_exit_accept4", "sock__exit_accept4"),
)
_OPENS_REGS: tuple[tuple[str, str], ...] = (
    *((f"syscalls:sys_exit_{s}", "sock__exit_dup_regs") for s in _DUPS),
    ("sock:inet_sock_set_state", "sock__set_state_regs"),
    ("syscalls:sys_exit_socket", "sock__exit_socket_regs"),
    ("syscalls:sys_exit_connect", "sock__exit_connect_regs"),
    ("syscalls:sys_exit_accept", "sock__exit_accept_regs"),
    ("syscalls:sys_exit_accept4", "sock__exit_accept_regs"),
)


def _syscall_pairs(names: tuple[str, ...], exit_fn: str = "sock__exit_data") -> tuple[tuple[str, str], ...]:
    return (*((f"syscalls:sys_enter_{s}", f"sock__enter_{s}") for s in names),
            *((f"syscalls:sys_exit_{s}", exit_fn) for s in names))  # fmt: skip


# Where the socket group takes the bytes from ([probes] data_hooks, see bpf/capture.c):
# "syscalls": a sys_enter/sys_exit pair per data syscall (any kernel >= 5.8);
# "socket": the socket layer's sock_send_length / sock_recv_length (kernel >= 6.3, x86-64), one
# program per socket call and none for file or pipe I/O; the *mmsg syscalls keep their pairs, and
# recvfrom/recvmsg on a datagram socket are emitted at the syscall's exit (the sender's address).
SYSCALL_DATA = "syscalls"
SOCKET_DATA = "socket"
DATA_HOOKS = ("auto", SOCKET_DATA, SYSCALL_DATA)
# Raw tracepoints the "socket" data path needs / uses when present (send start stamps, >= 6.12).
SOCKET_DATA_REQUIRED = ("sock_send_length", "sock_recv_length")
SOCKET_DATA_OPTIONAL = ("tcp_sendmsg_locked",)
# Socket-path programs that do nothing for a shed call: the agent backed off from a hopeless
# overload (hostagent.overload) detaches them (BpfCapture.set_backed_off) and re-attaches them when
# it takes full effort again. Each costs the traced app its dispatch on every send or recvfrom
# (the datagram exits are syscall tracepoints: a perf record is built before the program runs),
# close on every close() of any file (nginx closes the file it serves per request); the sockets
# closed meanwhile are found in /proc at the re-attach (hostagent.probes.missed). Only on the socket
# path: there a data program runs for sockets only, so an fd number a missed close left looking
# tracked is never taken for a file's.
DETACHED_BACKED_OFF = ("tcp_sendmsg_locked", "sys_exit_recvfrom", "sys_exit_recvmsg", "sys_enter_close")
DATA_PROGRAMS: dict[str, tuple[tuple[str, str], ...]] = {
    SYSCALL_DATA: (*_OPENS_SYSCALL, *_syscall_pairs(_DATA)),
    SOCKET_DATA: (
        *_OPENS_REGS,
        *_syscall_pairs(_MMSG, "sock__exit_mmsg"),  # their branch alone: less for the verifier at start
        # a datagram's sender is in the caller's sockaddr only at the syscall's exit (capture.c)
        ("syscalls:sys_exit_recvfrom", "sock__exit_dgram"),
        ("syscalls:sys_exit_recvmsg", "sock__exit_dgram"),
        ("raw:tcp_sendmsg_locked", "sock__send_start"),  # before the programs that consume it
        ("raw:sock_send_length", "sock__send_length"),
        ("raw:sock_recv_length", "sock__recv_length"),
    ),
}

GROUP_PROGRAMS: dict[str, tuple[tuple[str, str], ...]] = {
    SOCKET_GROUP: _LIFECYCLE,  # + DATA_PROGRAMS[the data path the loader chose]: opens, then data
    PROCESS_GROUP: (
        ("sched:sched_process_fork", "proc__fork"),  # before exec: a child's parent, for its EXEC
        ("sched:sched_process_exec", "proc__exec"),
        ("sched:sched_process_exit", "proc__exit"),
        ("cgroup:cgroup_mkdir", "proc__cgroup_mkdir"),
    ),
}


def groups_for(probes: frozenset[str] | set[str]) -> set[str]:
    """The program groups that must be attached for these enabled probes (unknown names ignored)."""
    out: set[str] = set()
    for p in probes:
        out |= PROBE_GROUPS.get(p, frozenset())
    return out
