/* hostagent socket and process capture (bcc C, compiled at run time by hostagent.probes.loader).
 *
 * Two program groups, attached and detached separately by the loader:
 *   "socket"  : syscall tracepoints that learn which (tgid, fd) are AF_INET/AF_INET6 sockets
 *               (socket, connect, accept, bind, dup, close); sched_process_fork so a forked
 *               child's inherited sockets are followed (see inherit(); exec and close_range end
 *               what a child inherits, dup/dup2/dup3/fcntl(F_DUPFD) copy an entry);
 *               sock:inet_sock_set_state for each TCP socket's own end (see sock__set_state)
 *               next to bind()'s, and for each new listener (LISTEN events). The bytes each
 *               read/write-family call really moved (a bounded prefix) come from one of two
 *               data paths (the loader picks, [probes] data_hooks): the socket layer's
 *               sock_send_length / sock_recv_length raw tracepoints (Linux >= 6.3, x86-64: one
 *               program per socket call, none for file or pipe I/O; see sock_data), or a
 *               sys_enter/sys_exit pair per data syscall (any kernel; see enter_data/exit_data).
 *               The *mmsg syscalls always use their pair. On the socket path the opens and
 *               the copies (socket, connect, accept, dup, fcntl) have no enter program: their
 *               exits read the arguments from the saved user registers (syscall_args).
 *   "process" : sched_process_exec / sched_process_exit as EXEC/EXIT events (identity needs them;
 *               sched_process_fork remembers each child's parent for its EXEC event),
 *               cgroup:cgroup_mkdir of the unified hierarchy as CGROUP events (id -> path).
 * Functions are named sock__* / proc__* (not TRACEPOINT_PROBE) so bcc does not auto-attach them.
 *
 * Kernel-struct independent: only tracepoint fields, syscall arguments (from the tracepoint, or
 * from the x86-64 user registers the kernel saved, whose layout is the ptrace ABI) and user
 * memory are read (struct iovec, msghdr, mmsghdr and sockaddr_in/in6 are user ABI, not kernel
 * structs), so the program is right whatever kernel headers bcc compiles against.
 *
 * Cost control (see PERFORMANCE-NOTES.md): every filter runs in the kernel (self, not a socket,
 * muted connection, probes off); records are submitted with BPF_RB_NO_WAKEUP and Python drains
 * the ring on a short timer, except when the ring fills past WAKE_BYTES (asked every QUERY_EVERY
 * records). On the socket path a call costs one hash lookup (sockets; proc_gen and muted only when
 * a process exited or a mute came since its socket was last found current and not muted:
 * exit_epoch, mute_epoch) in one program; a send's start stamp is an array slot by thread id. On
 * the syscall path a tracked read/write costs two at sys_enter (sockets, and the thread's inflight
 * slot, written in place; proc_gen and muted as above) and
 * one at sys_exit (the same slot): the socket's entry travels from enter to exit inside the slot.
 * Measure with bench-style A/B runs of kernel.bpf_stats_enabled (run_time_ns / run_cnt per
 * program), never against an old figure.
 *
 * Specialised with cflags: -DMAX_PAYLOAD=<bytes> -DSELF_TGID=<agent pid> -DRING_PAGES=<pages>
 * -DWAKE_BYTES=<bytes> -DNR_CPUS=<possible cpus>.
 */
#include "events.h"

/* Which data path's programs are compiled whole (the loader's -DDATA_PATH): the socket layer's (1),
 * the syscall tracepoints' (2) or both (3). The other path's programs keep their signatures (bcc
 * makes a tracepoint's struct from its program's argument, and the socket path's exits cast their
 * context to those structs) and return at once, so clang emits and inlines nothing of their bodies:
 * ~40% less compile on the socket path, which is start to READY (bench/README, twenty-eighth round). */
#ifndef DATA_PATH
#define DATA_PATH 3
#endif
#define SOCKET_PROGRAMS (DATA_PATH & 1)
#define SYSCALL_PROGRAMS (DATA_PATH & 2)

/* bpf_probe_read_user under a name of our own. At every call it sees by the helper's name, bcc's
 * rewriter asks whether the kernel has the helper by building a table of all of /proc/kallsyms
 * anew: ~0.15 s per call site on a VM with 121k kernel symbols, half of this file's compile time
 * (start to READY). Every kernel this agent runs on (>= 5.8) has the helper. */
static long (*read_user)(void *dst, u32 size, const void *unsafe_ptr) = (void *)BPF_FUNC_probe_read_user;

#ifndef SELF_TGID
#define SELF_TGID 0
#endif
#ifndef RING_PAGES
#define RING_PAGES 512             /* 2 MiB with 4 KiB pages; must be a power of two */
#endif
#ifndef WAKE_BYTES
#define WAKE_BYTES (RING_PAGES * 4096 / 4)
#endif
#ifndef NR_CPUS
#define NR_CPUS 256                /* possible CPUs; the loader passes the real count */
#endif
#ifndef MAX_IOV
#define MAX_IOV 128                /* iovecs walked per readv/writev/recvmsg/sendmsg: grpcio
                                      writes its first HEADERS in 25 and 20 concurrent calls
                                      in 65 (1.2 KB); 260 would not load */
#endif
#ifndef MAX_MMSG
#define MAX_MMSG 8                 /* messages reported per recvmmsg/sendmmsg */
#endif
#define MMSG_IOV 4                 /* iovecs walked per message of an mmsg call */
#define TAIL_IOV 16                /* iovecs a call's tail may span: a few frames, whose headers and
                                      payloads may each be an iovec of their own */
#define NO_IOV 0xffffffffu

#define AF_INET_ 2
#define AF_INET6_ 10
#define SOCK_STREAM_ 1
#define SOCK_DGRAM_ 2
#define EINPROGRESS_ 115
#define IPPROTO_TCP_ 6
#define TCP_ESTABLISHED_ 1
#define TCP_SYN_SENT_ 2
#define TCP_SYN_RECV_ 3
#define TCP_LISTEN_ 10
#define MSG_PEEK_ 2
#define MSG_ERRQUEUE_ 0x2000
#define INHERIT_LEVELS 2           /* ancestors searched for an inherited fd: parent, grandparent */

/* User ABI layouts (x86_64/arm64 LP64), read with bpf_probe_read_user. */
struct u_iovec {
    u64 base;
    u64 len;
};
struct u_msghdr {
    u64 name;        /* struct sockaddr * */
    u32 namelen;
    u32 _pad;
    u64 iov;         /* struct iovec * */
    u64 iovlen;
    u64 control;
    u64 controllen;
    u32 flags;
    u32 _pad2;
};
#define U_MMSGHDR_SIZE 64          /* struct mmsghdr: msghdr (56) + msg_len (u32) + pad */
#define U_MMSG_LEN_OFF 56

/* Arguments saved at sys_enter, consumed at sys_exit of the same thread. */
struct inflight {
    u64 buf;         /* buffer, iovec array, msghdr or mmsghdr array */
    u64 addr;        /* struct sockaddr * (connect/accept/sendto/recvfrom), 0 if none */
    u64 addrlen;     /* sendto/connect: the length; accept/recvfrom: int * to read at exit */
    u32 fd;
    u32 count;       /* iovcnt / vlen / socket() family */
    u32 aux;         /* socket() type; connect(): 1 once ESTABLISHED came in this thread (on_syn_sent) */
    u8 op;           /* enum syscall_op */
    u8 direction;
    u16 _pad;
    u32 dgen;        /* a datagram receive deferred to its exit: CONF_DGRAM_EXIT when saved */
    u64 ts;          /* egress data: sys_enter's time, when the bytes start to leave (exit_data) */
    struct sock_info si; /* data ops: the socket's entry as sys_enter found it, so sys_exit needs
                            no second sockets/proc_gen lookup */
};

/* Made at fork for a child of a process with sockets (keyed by the new task's pid; for a thread
 * that is a tid no process ever looks up as its tgid, so threads cost an entry and nothing else).
 * fd/info: the parent's recent_fds as they were at fork time. */
struct fork_link {
    u32 parent;                    /* tgid that forked */
    u32 _pad;
    u64 parent_gen;                /* its proc_gen then: its entries from before count, no others */
    u64 fork_ts;                   /* entries learnt later are not the child's */
    u32 closed_lo;                 /* close_range() closed [closed_lo, closed_hi] (a bounding */
    u32 closed_hi;                 /* range over all calls); lo > hi: none */
    u32 fd[RECENT_FDS];            /* NO_FD: empty slot */
    struct sock_info info[RECENT_FDS];
};

/* A socket's own end as inet_sock_set_state reports it. */
struct endpoint {
    u8 addr[16];                   /* AF_INET: first 4 bytes */
    u16 port;                      /* host byte order */
    u16 family;
    u32 _pad;
};

/* A TCP connect() whose ESTABLISHED came in another task's context (softirq: a remote peer's
 * SYN-ACK), keyed by the socket's address: made by whichever of ESTABLISHED and connect()'s
 * return comes first, taken by the other. An ESTABLISHED in the connecting thread's own context
 * (loopback: the SYN-ACK is handled before connect() returns) needs no entry: see on_syn_sent. */
struct connecting {
    u64 key;                       /* tgid << 32 | fd */
    u64 ts;                        /* the sockets entry's ts, once connect() returned */
    struct endpoint local;
    u8 established;                /* local is filled */
    u8 returned;                   /* connect() returned: key/ts name the entry to update */
    u8 _pad[6];
};

/* The peer of an accepted connection as accept() will report it (ESTABLISHED from SYN_RECV
 * happens before accept() returns); value: the local end it reached. */
struct accepted_key {
    u8 addr[16];
    u16 port;
    u16 family;
    u32 _pad;
};

/* Both ends of a connection as inet_sock_set_state reported them at ESTABLISHED; the peer as
 * accept() would have named it (the key of its accepted entry). */
struct conn_ends {
    struct endpoint local;
    struct accepted_key peer;
};

/* Value of accepted: the local end the connection reached, and the socket's address (opaque). */
struct accepted_end {
    struct endpoint local;
    u64 sk;
};

/* The state of an HTTP/2 frame walk (see "HTTP/2 frame chains"), kept in the CPU's scratch from
 * the data program to the walker program it tail-calls, and from one run of that to the next. */
struct h2_walk {
    u64 key;        /* the socket's entry */
    u64 iov;        /* iovec array; 0: one buffer (vbase, vlen) */
    u64 cnt;        /* iovecs */
    u64 moved;      /* the call's bytes */
    u64 head;       /* frames that end inside the head are in the event already */
    u64 at;         /* where the next frame header starts */
    u64 vbase;      /* the current iovec */
    u64 vlen;
    u64 vpos;       /* where the current iovec starts in the call's bytes */
    u64 copy_at;    /* a non-DATA payload being copied: from here, this many bytes */
    u64 copy_left;
    u32 idx;        /* the current iovec's index */
    u32 hgot;       /* bytes of the frame header at `at` read so far (into scratch.h2hdr) */
    u32 out;        /* frame block bytes written after struct h2_block */
    u32 state;      /* H2W_* */
    u32 start;      /* where the first frame of the block starts; moved: none */
    u32 from;       /* where the call's first frame starts */
    u32 frames;
    u32 full;       /* the block had no room for a frame: the rest is not in it */
    u32 strict;     /* the first header ends a loss: only a plausible one is taken */
    u32 small;      /* the call is whole in its copy (head, or head and tail): walked there */
    u32 calls;      /* walker runs so far */
    u32 captured;   /* the event's payload (head and tail) before the walk */
    u32 left;       /* the entry's h2_left of the direction, as the event was built */
    u8 dir;
    u8 named;       /* the entry's named, as the event was built */
    u8 h2;          /* the entry's h2, as the event was built */
    u8 sock_h2;     /* the entry's own h2 bits (no loss bits added): the tail program's test */
};

/* The per-CPU place where an event is built; the data array has room for an offset plus a
 * length that are each only known to the verifier as <= MAX_PAYLOAD, and for the tail's offset
 * and length (each <= TAIL_BYTES <= MAX_PAYLOAD) after a head of MAX_PAYLOAD. */
struct scratch {
    struct event_hdr hdr;
    /* the head, then the tail or an HTTP/2 frame block (h2_walk: an offset and a length each
     * bounded by H2_BLOCK) */
    u8 data[MAX_PAYLOAD + (MAX_PAYLOAD + TAIL_BYTES > 2 * H2_BLOCK ? MAX_PAYLOAD + TAIL_BYTES : 2 * H2_BLOCK)];
    u8 h2hdr[32];  /* the frame header a walk is reading (it may span two iovecs) */
    struct h2_walk h2w;
    u32 submits;   /* records this CPU submitted (see submit) */
    u32 walk_off;  /* walk_iov's offset and bytes left between iterations (see there) */
    u64 walk_left;
    u64 walk_iov;  /* the iovec array and its count, read back for the same reason */
    u64 walk_cnt;
    u64 walk_pos;  /* bytes of the call before the current iovec */
    u64 walk_from; /* where the tail starts in the call's bytes, 0: no tail to copy */
    u64 walk_skip; /* bytes of iovec walk_tidx before the tail */
    u32 walk_tidx; /* the iovec the tail starts in, NO_IOV until found */
    u32 walk_tail; /* tail bytes copied so far */
    u32 shed;      /* data calls this CPU shed (the ring is asked every SHED_ASK: see shed_call) */
    u32 _pad0;
} __attribute__((aligned(64)));  /* one CPU's counter never shares a cache line with the next
                                    CPU's header: both are written on every record */

BPF_RINGBUF_OUTPUT(events, RING_PAGES);
/* One slot per CPU, indexed by bpf_get_smp_processor_id(): a plain array because per-CPU map
 * values are capped at 32 KiB and 2 * 16 KiB payloads would not fit. Safe because tracepoint
 * programs do not nest on one CPU. */
BPF_ARRAY(scratch_buf, struct scratch, NR_CPUS);
BPF_TABLE("lru_hash", u64, struct sock_info, sockets, 65536);  /* tgid<<32|fd -> info */
BPF_TABLE("lru_hash", u64, u8, muted, 65536);                  /* tgid<<32|fd: no DATA */
/* Bumped by Python after each entry it puts into muted (1, 2, ... never 0 again): an entry whose
 * epoch_seen is the current value (+ exit_epoch, below) was found not muted since the last mute, so
 * its calls skip the muted lookup (a miss there cost ~100-140 ns per data call here, kdata round: a
 * bucket of a 1 MiB array, cold). 0: nothing was ever muted. */
BPF_ARRAY(mute_epoch, u32, 1);
BPF_TABLE("lru_hash", u32, u64, proc_gen, 65536);              /* tgid -> bumped at exit */
/* Bumped at every process exit, after its proc_gen: an entry whose epoch_seen is the current
 * mute_epoch + exit_epoch was found current (its gen its process's) and not muted since the last
 * exit and mute, so its calls skip the proc_gen lookup as well as the muted one (a hash lookup in a
 * map that holds every pid that exited: ~30-45 ns per data call here, bench/README kdata2 round). */
BPF_ARRAY(exit_epoch, u32, 1);
/* pid_tgid -> args. A thread's slot is reused from call to call (op cleared at sys_exit, the
 * slot deleted at thread exit): an in-place write and a lookup per syscall instead of a hash
 * insert and delete. LRU, so slots of threads whose exit went unseen cannot fill it for good. */
BPF_TABLE("lru_hash", u64, struct inflight, inflight, 16384);
BPF_TABLE("lru_hash", u32, struct recent_fds, recent, 16384);  /* tgid -> last socket fds */
BPF_TABLE("lru_hash", u32, struct fork_link, fork_link, 16384);/* child pid -> its fork */
BPF_PERCPU_ARRAY(link_tmp, struct fork_link, 1);               /* too big for the stack */
BPF_TABLE("lru_hash", u64, u64, no_inherit, 65536);            /* tgid<<32|fd -> fork_ts: decided */
BPF_TABLE("lru_hash", u64, struct connecting, connecting, 16384); /* skaddr -> connect() */
BPF_TABLE("lru_hash", struct accepted_key, struct accepted_end, accepted, 16384);
/* The same, first: one slot per hash of the peer, written in place (no lock, no LRU node to take
 * and give back: an insert and a delete per accepted connection were ~0.3 us here, twentieth
 * round). A slot whose entry is another peer's and younger than HS_STALE_NS is busy: that
 * handshake goes to accepted, as all did before. Slots are taken by accept() (sk 0); one whose
 * accept() never came (reset in the backlog, io_uring, accept(NULL): ends_by_sk) goes stale. */
#define HS_BITS 12
#define HS_STALE_NS 10000000000ULL
struct handshake {
    struct accepted_key peer;
    struct accepted_end end;       /* end.sk 0: free */
    u64 ts;
};
BPF_ARRAY(handshakes, struct handshake, 1 << HS_BITS);
/* The same connections' two ends by the socket's address, for an accept() that names no peer
 * (libuv, so every Node.js server, passes NULL): the first data call on the socket layer, which
 * has that address, fills its entry in (ends_from_handshake). An accept() that names the peer
 * deletes it (the address is in its accepted entry). Kept only on the socket data path, and there
 * only without the struct sock offsets ENDS_FROM_SOCK needs; the syscall path never reads it. */
BPF_TABLE("lru_hash", u64, struct conn_ends, ends_by_sk, 16384);
/* Sockets adopted at a data call (adopt), by the kernel's socket address: the same socket met
 * again on another fd of the process (systemd's Accept=yes service reads fd 0 and writes fd 1,
 * dup2()s of one socket) is one stream named by the first fd, as dup() makes it for a tracked
 * socket. ``ts`` is the first fd's entry's: once that entry is closed or replaced, a socket later
 * allocated at the same address is adopted afresh. */
struct adopted_sk {
    u32 tgid;
    u32 id_fd;
    u64 ts;
};
BPF_TABLE("lru_hash", u64, struct adopted_sk, adopted, 4096);
/* Process group: child pid -> the tgid that forked it, handed on in its EXEC events (size). A
 * program gone before the agent reads its /proc (a shell loop's curl) still has its parent; the
 * socket group's FORK events name only children of processes with sockets. Kept across execs
 * (sh -c 'exec curl' execs twice); a fork with the pid overwrites it; LRU forgets the rest. */
BPF_TABLE("lru_hash", u32, u32, exec_parent, 16384);
/* When a TCP send began (tcp:tcp_sendmsg_locked, kernel >= 6.12), per thread: sock_send_length
 * fires when the call returns, and on loopback the reader can return before that, so the bytes
 * are stamped at the send's start as the syscall programs do (a server span ends before its
 * client's). sk = 0: consumed. Without the tracepoint a send is stamped when it returns. */
struct send_start {
    u64 sk;
    u64 msg;
    u64 ts;
    u32 epoch;  /* shed_state.epoch at the stamp: a stamp from before a shed episode is stale */
    u32 tid;    /* the thread whose stamp this is (send_stamp is shared by thread ids modulo) */
};
/* By thread id modulo its size, the thread id in the slot: an array lookup (inlined, one line the
 * thread itself wrote last) instead of a hash lookup (the key hashed, a bucket and an element read):
 * twice per send. Two threads whose ids share a slot and send at the same time: the
 * one whose stamp was written over finds another thread's id and is stamped when its call returns,
 * as without the tracepoint. */
#define SEND_SLOTS 16384
BPF_ARRAY(send_stamp, struct send_start, SEND_SLOTS);
static __always_inline struct send_start *send_slot(u64 pid_tgid) {
    u32 idx = (u32)pid_tgid & (SEND_SLOTS - 1);
    return send_stamp.lookup(&idx);
}
/* Per CPU: a shared counter would be one cache line written by every CPU for every event shed
 * while the ring is full, exactly when the traced processes are busiest. Python sums the CPUs. */
BPF_PERCPU_ARRAY(drops, u64, DROP_CAUSES);
/* Holds "events" itself (Python puts it at index 0): a map-in-map lookup is the way bcc C can
 * get a map pointer to pass to bpf_ringbuf_query. */
BPF_ARRAY_OF_MAPS(ring_ref, "events", 1);
BPF_ARRAY(config, u32, CONF_KEYS);
/* Datagram receives the socket path left to their syscall's exit and not yet emitted (see
 * sock_data): while 0, the exit of every other recvfrom/recvmsg (TCP's) returns after one array
 * read instead of a hash lookup. Only a thread that dies in between leaves it above 0 (then the
 * exits just look up their slot). */
BPF_ARRAY(dgram_pending, u64, 1);
/* dup()s saved at sys_enter and not yet taken at sys_exit: while 0, the exit of every fcntl()
 * (F_GETFL, F_SETFL, locks: nearly all of them; gunicorn makes four per request) returns after
 * one array read instead of looking the thread's slot up. As above, only a thread that dies in
 * between leaves it above 0 (then the exits look their slot up, as before). */
BPF_ARRAY(dup_pending, u64, 1);
/* Whether data calls are shed (the ring was full), for every CPU at once, and the shed epoch,
 * bumped when shedding begins and when it ends. One flag for all CPUs, not one per CPU: a socket
 * used from two CPUs (a thread that migrates) must not have a call shed on one while the other
 * captures it unmarked. */
struct shed_state {
    u32 on;
    u32 epoch;
};
BPF_ARRAY(shed_state, struct shed_state, 1);
/* Which sockets lost calls, without looking them up where the call is shed: a call shed on the
 * socket path writes the episode's epoch into its socket's slot (by the kernel's socket address,
 * hashed); the socket's next captured call finds the slot changed since it last looked
 * (sock_info.shed_seen) and counts a loss (sock_info.lost), which its event carries to the
 * parser. Only the sockets that lost calls resynchronise (and the rare one sharing a slot with
 * such a socket), not every connection of the host: a request waiting for a slow answer on a
 * socket that lost nothing keeps its span. A captured call looks at its slot only when a shed
 * episode (or an exit, or a mute) began since its socket's last captured call (epoch_seen): a
 * cold line of a 64 KiB array otherwise read by every call (kdata2 round). */
#define SHED_MARK_BITS 14
BPF_ARRAY(shed_marks, u32, 1 << SHED_MARK_BITS);

/* The HTTP/2 frame walker programs ("HTTP/2 frame chains"), by the type of the program that
 * tail-calls them (a program array serves one program type). The loader puts sock__h2_walk_raw / sock__h2_walk_tp at index 0. Declared
 * here with the other maps: declared further down, after the first functions, bcc 0.26 crashed
 * (SIGSEGV) instead of reporting clang's errors when the kernel headers were broken. */
BPF_PROG_ARRAY(h2_walk_raw, 1);
BPF_PROG_ARRAY(h2_walk_tp, 1);
/* The tail copy of a big iovec call on the socket path (sock__tail_raw, "tail copy"), likewise. */
BPF_PROG_ARRAY(tail_raw, 1);

static __always_inline void count_drop(u32 cause) {
    u64 *c = drops.lookup(&cause);
    if (c)
        *c += 1;  /* this CPU's slot; tracepoint programs do not nest on one CPU */
}

/* ---- handshakes: the server ends of TCP handshakes by peer (see the map) ------------------ */

static __always_inline u64 key_word(const struct accepted_key *k, int i) {
    u64 w;
    __builtin_memcpy(&w, (const u8 *)k + 8 * i, sizeof(w));
    return w;
}

static __always_inline int same_peer(const struct accepted_key *a, const struct accepted_key *b) {
    return key_word(a, 0) == key_word(b, 0) && key_word(a, 1) == key_word(b, 1) &&
           key_word(a, 2) == key_word(b, 2);
}

static __always_inline struct handshake *handshake_slot(const struct accepted_key *k) {
    u64 h = (key_word(k, 0) ^ key_word(k, 1) ^ key_word(k, 2)) * 0x9E3779B97F4A7C15ULL;
    u32 idx = (u32)(h >> (64 - HS_BITS));
    return handshakes.lookup(&idx);
}

/* The server's end of a handshake into its slot (handshakes); 0 when the slot is busy. */
static __always_inline int handshake_put(const struct accepted_key *k, const struct accepted_end *a) {
    struct handshake *h = handshake_slot(k);
    if (!h)
        return 0;
    u64 now = bpf_ktime_get_ns();
    if (h->end.sk && now - h->ts < HS_STALE_NS && !same_peer(&h->peer, k))
        return 0;
    __builtin_memcpy(&h->peer, k, sizeof(h->peer));
    __builtin_memcpy(&h->end, a, sizeof(h->end));
    h->ts = now;
    return 1;
}

/* The slot that holds the handshake of this peer, or 0 (then accepted may). */
static __always_inline struct handshake *handshake_of(const struct accepted_key *k) {
    struct handshake *h = handshake_slot(k);
    if (!h || !h->end.sk || !same_peer(&h->peer, k))
        return 0;
    return h;
}

static __always_inline int socket_enabled(void) {
    u32 k = CONF_SOCKET_ENABLED;
    u32 *v = config.lookup(&k);
    return v && *v;
}

/* The socket path's datagram exits (sock__exit_dgram): odd while attached. While they are not,
 * a datagram receive cannot be finished with its sender and is not deferred (sock_data); one
 * deferred under another value had its exit detached meanwhile. */
static __always_inline u32 dgram_exit_gen(void) {
    u32 k = CONF_DGRAM_EXIT;
    u32 *v = config.lookup(&k);
    return v ? *v : 0;
}

static __always_inline u64 current_gen(u32 tgid) {
    u64 *g = proc_gen.lookup(&tgid);
    return g ? *g : 0;
}

/* A closed socket's entry stays in its slot, marked by this gen (proc_gen values are
 * bpf_ktime_get_ns() stamps, never this), so that the next socket() or accept() that gets the
 * same fd number -- a server accepting one connection at a time, a client connecting one at a
 * time: every time -- writes it in place (put_sock) instead of a delete at close and an LRU insert
 * later, each a bucket lock and a node taken from or given back to the LRU lists. */
#define CLOSED_GEN 0xffffffffffffffffULL

/* What sock_info.epoch_seen is compared with, read before the entry is looked up (an exit, a mute
 * or a shed episode after the read bumps the sum past it): mute_epoch (0: nothing was ever muted)
 * and the sum of mute_epoch, exit_epoch and the shed epoch (shed_state). Each only grows, so an
 * equal sum means none changed. ok 0 when the arrays cannot be read: every check is made. */
struct epochs {
    u32 mute;
    u32 sum;
    int ok;
};
static __always_inline void epochs_now(struct epochs *e) {
    u32 zero = 0;
    u32 *me = mute_epoch.lookup(&zero);
    u32 *xe = exit_epoch.lookup(&zero);
    struct shed_state *se = shed_state.lookup(&zero);
    e->ok = me && xe && se;
    e->mute = me ? *me : 1;
    e->sum = e->ok ? *me + *xe + *(volatile u32 *)&se->epoch : 0;
}

/* The socket entry for (tgid, fd), or 0 when fd is not a tracked inet socket of this very
 * process (an entry left by a dead process whose pid was reused has an older gen; a closed one
 * CLOSED_GEN, kept for put_sock). With epochs (e, read before): an entry found current since the
 * last exit (epoch_seen) is not checked again. */
static __always_inline struct sock_info *lookup_sock_at(u32 tgid, u32 fd, const struct epochs *e) {
    u64 key = ((u64)tgid << 32) | fd;
    struct sock_info *si = sockets.lookup(&key);
    if (!si || si->gen == CLOSED_GEN)
        return 0;
    if (e && e->ok && si->epoch_seen == e->sum)
        return si;  /* no process exited since its gen was found current */
    if (si->gen != current_gen(tgid)) {
        sockets.delete(&key);
        return 0;
    }
    return si;
}

static __always_inline struct sock_info *lookup_sock(u32 tgid, u32 fd) {
    return lookup_sock_at(tgid, fd, 0);
}

/* Marks tgid as a process whose forks are followed and keeps fd among its last RECENT_FDS. */
static __always_inline void remember_fd(u32 tgid, u32 fd) {
    struct recent_fds *r = recent.lookup(&tgid);
    if (!r) {
        struct recent_fds n = {};
        n.fd[0] = fd;
        n.fd[1] = NO_FD;
        n.fd[2] = NO_FD;
        n.fd[3] = NO_FD;
        n.next = 1;
        recent.update(&tgid, &n);
        return;
    }
#pragma unroll
    for (int i = 0; i < RECENT_FDS; i++) {
        if (r->fd[i] == fd)
            return;  /* accept-fork-close servers get the same fd number again and again */
    }
    u32 i = r->next & (RECENT_FDS - 1);
    r->fd[i] = fd;
    r->next = i + 1;
}

static __always_inline int from_link(struct fork_link *l, u32 fd, struct sock_info *out) {
#pragma unroll
    for (int i = 0; i < RECENT_FDS; i++) {
        if (l->fd[i] == fd) {
            __builtin_memcpy(out, &l->info[i], sizeof(*out));
            return 1;
        }
    }
    return 0;
}

/* fork() copies the fd table, so a child holds its parent's sockets under the same numbers but
 * under a new tgid. On a miss for (tgid, fd) in a process made by a fork we followed, decide
 * once whether fd is an inherited socket: from the parent's recent fds as they were at the fork,
 * else from the parent's (then grandparent's) map entry if it predates the fork and belongs to
 * the very process that forked. Found: copied to (tgid, fd). Either way the decision is kept in
 * no_inherit (stamped with the fork) so the next miss costs two lookups, and so an fd closed
 * and reused later is never taken for the inherited socket. Processes not made by such a fork
 * pay one fork_link lookup per miss. */
static __always_inline struct sock_info *inherit(u32 tgid, u32 fd) {
    struct fork_link *l = fork_link.lookup(&tgid);
    if (!l)
        return 0;
    u64 key = ((u64)tgid << 32) | fd;
    u64 stamp = l->fork_ts;
    u64 *decided = no_inherit.lookup(&key);
    if (decided && *decided == stamp)
        return 0;
    if (fd >= l->closed_lo && fd <= l->closed_hi)
        return 0;  /* closed by close_range(), which says no fd by name */
    no_inherit.update(&key, &stamp);
    struct sock_info si = {};
    int found = 0;
#pragma unroll
    for (int lvl = 0; lvl < INHERIT_LEVELS; lvl++) {
        if (from_link(l, fd, &si)) {
            found = 1;
            break;
        }
        u32 parent = l->parent;
        u64 pkey = ((u64)parent << 32) | fd;
        struct sock_info *ps = sockets.lookup(&pkey);
        if (ps && ps->gen != CLOSED_GEN) {
            if (ps->gen == l->parent_gen && ps->ts <= l->fork_ts) {
                __builtin_memcpy(&si, ps, sizeof(si));
                found = 1;
            }
            break;  /* the parent's fd is something newer, or its pid is someone else's now */
        }
        struct fork_link *pl = fork_link.lookup(&parent);
        if (!pl || pl->fork_ts > l->fork_ts)
            break;  /* not forked by a process we follow, or the pid was reused since */
        u64 *pd = no_inherit.lookup(&pkey);
        if (pd && *pd == pl->fork_ts)
            break;  /* the parent already settled its fd (not a socket, or closed it) */
        l = pl;
    }
    if (!found)
        return 0;
    si.gen = current_gen(tgid);
    si.named = 0;  /* a new process to the tracker: its first event names the connection again */
    si.epoch_seen = 0;  /* its muted key is another (tgid): not looked up yet */
    sockets.update(&key, &si);
    remember_fd(tgid, fd);
    return sockets.lookup(&key);
}

/* The entry of key becomes *si: written over the slot the key has (a closed socket's, see
 * CLOSED_GEN), else inserted. */
static __always_inline void put_sock(u64 key, struct sock_info *si) {
    struct sock_info *slot = sockets.lookup(&key);
    if (slot) {
        __builtin_memcpy(slot, si, sizeof(*si));
        return;
    }
    sockets.update(&key, si);
}

/* A new entry's epoch_seen (see lookup_sock_at, capturable), with the epochs read before its gen
 * was: its gen is current and its key is unmuted (unmute) by the program that writes it, so its
 * socket's first data call need not look either up again (a proc_gen lookup, and a muted one once
 * anything was muted). A process exit or a mute since e was read changed the sum: checked then. */
static __always_inline u32 fresh_seen(const struct epochs *e) {
    return e->ok ? e->sum : 0;
}

/* mute_epoch's value (0: nothing was ever muted). */
static __always_inline u32 mute_epoch_now(void) {
    u32 zero = 0;
    u32 *me = mute_epoch.lookup(&zero);
    return me ? *me : 1;
}

/* muted.delete when there is something to delete: a lookup takes no lock, a delete the bucket's
 * (with interrupts off) whether the key is there or not, and almost no socket is muted. */
static __always_inline void unmute(u64 key) {
    if (mute_epoch_now() == 0)
        return;  /* nothing was ever muted */
    if (muted.lookup(&key))
        muted.delete(&key);
}

static __always_inline struct sock_info *lookup_or_inherit_at(u32 tgid, u32 fd, const struct epochs *e) {
    struct sock_info *si = lookup_sock_at(tgid, fd, e);
    return si ? si : inherit(tgid, fd);
}

static __always_inline struct sock_info *lookup_or_inherit(u32 tgid, u32 fd) {
    return lookup_or_inherit_at(tgid, fd, 0);
}

/* How often (in records per CPU) submit asks how full the ring is: the query reads the ring's
 * positions (a cache line the consumer and the other CPUs write) and cost about as much as the
 * ringbuf_output after it; a wake-up that comes up to 15 records late changes nothing. */
#define QUERY_EVERY 16

/* Bytes in the ring that the consumer has not read yet, in *avail; 0 when the ring's map cannot
 * be had (ring_ref is filled by the loader before any program is attached). */
static __always_inline int ring_avail(u64 *avail) {
    int zero = 0;
    void *rb = ring_ref.lookup(&zero);
    if (!rb)
        return 0;
    *avail = bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA);
    return 1;
}

static __always_inline struct shed_state *shed_state_get(void) {
    int zero = 0;
    return shed_state.lookup(&zero);
}

static __always_inline u32 *shed_mark(u64 sk) {
    u32 idx = (u32)((sk * 0x9E3779B97F4A7C15ULL) >> (64 - SHED_MARK_BITS));
    return shed_marks.lookup(&idx);
}

/* Whether a new entry can be named (sock_info.named) by its opening record, ACCEPT or CONNECT, on
 * the socket at sk (0: not known): its first data call on the socket path then compares the
 * socket's shed mark with shed_seen as every named entry's calls do (sock_data), so shed_seen is
 * the mark as it is now. Unknown sk: left unnamed, its first data record names it, as before. */
static __always_inline int named_at_open(u64 sk, struct sock_info *si) {
    u32 *mark = sk ? shed_mark(sk) : 0;
    if (!mark)
        return 0;
    si->shed_seen = (u16)*mark;
    return 1;
}

/* A record was refused: shed from now on, in a new epoch (the value this episode's shed calls
 * mark their sockets with, and that makes a send's earlier start stamp stale). */
static __always_inline void begin_shedding(void) {
    struct shed_state *st = shed_state_get();
    if (!st)
        return;
    __sync_fetch_and_add(&st->epoch, 1);
    st->on = 1;
}

/* Returns 0 when the record is in the ring. */
static __always_inline int submit(struct scratch *s, u32 captured) {
    u64 flags = BPF_RB_NO_WAKEUP;
    u64 avail = 0;
    if ((s->submits++ & (QUERY_EVERY - 1)) == 0 && ring_avail(&avail) && avail > WAKE_BYTES)
        flags = BPF_RB_FORCE_WAKEUP;  /* the ring is filling: do not wait for the timer */
    u64 len = captured;
    asm volatile("" : "+r"(len));  /* bound the very register passed to the helper */
    if (len > MAX_PAYLOAD + PAYLOAD_EXTRA)
        len = MAX_PAYLOAD + PAYLOAD_EXTRA;
    if (events.ringbuf_output(s, sizeof(struct event_hdr) + len, flags) != 0) {
        count_drop(DROP_RINGBUF_FULL);
        s->shed = 0;
        begin_shedding();
        if (s->hdr.kind == EVENT_DATA) {
            /* the entry the event was named by; a dup()'d copy whose original is closed, or a
             * forked child's inherited entry, is not found here and its loss goes unmarked */
            u64 key = ((u64)s->hdr.pid << 32) | (u32)s->hdr.fd;
            struct sock_info *si = sockets.lookup(&key);
            if (si)
                si->lost++;
        }
        return -1;
    }
    return 0;
}

/* The entry of (the caller's tgid, fd) has had a data event reach the ring: later events of it
 * leave comm and cgroup_id out. Looked up (once per socket) because the syscall path's exit works
 * on a copy of the entry. */
static __always_inline void name_entry(u64 pid_tgid, u32 fd) {
    u64 key = (pid_tgid & 0xffffffff00000000ULL) | fd;
    struct sock_info *si = sockets.lookup(&key);
    if (si)
        si->named = 1;
}

/* While the ring is full (the agent is behind, e.g. at nice 10 on a saturated host), a data
 * call's event would be built -- user bytes copied, header filled -- only for ringbuf_output to
 * refuse it. Instead, from the first refused record on, every CPU sheds data calls (shed_state):
 * counted as DROP_RINGBUF_FULL like the refused ones (the same loss, so the same cause). On the
 * socket path the call is shed first thing, before its registers are read or its socket looked
 * up, and marked by its socket's address (shed_marks; a shed send 282-305 -> 130-135 ns here, a
 * shed receive 248-263 -> 118-123: bench/README, fifteenth round); on the syscall path at
 * sys_enter, nothing saved for sys_exit, the loss counted on the entry. Every SHED_ASK-th call a
 * CPU sheds asks the ring; once it is below SHED_RESUME_BYTES (half of it drained) calls are
 * captured again. A stream cut this way resynchronises at its next message, as after any refused
 * record: its count of lost calls changed. Connect, accept and close events are never shed (they
 * are few and carry the connection's state). */
#define SHED_ASK 16
#define SHED_RESUME_BYTES (RING_PAGES * 4096 / 2)
/* Whether to shed this data call: 1 while the ring is full, except that every SHED_ASK-th call a
 * CPU sheds asks the ring, and once it is below SHED_RESUME_BYTES (half drained) ends the episode
 * for every CPU (a new epoch, so the next episode marks its sockets with another value).
 * sock__send_start asks too: a send's start stamp would go unused (at saturation, every send). */
static __always_inline int shed_call(struct shed_state *st) {
    if (!st || !st->on)
        return 0;
    u32 cpu = bpf_get_smp_processor_id();
    struct scratch *s = scratch_buf.lookup(&cpu);
    u64 avail = 0;
    if (s && (s->shed++ & (SHED_ASK - 1)) == SHED_ASK - 1 && ring_avail(&avail) && avail < SHED_RESUME_BYTES) {
        st->on = 0;
        __sync_fetch_and_add(&st->epoch, 1);
        return 0;
    }
    return 1;
}

/* shed_call, and the shed call counted (the same loss as a refused record, so the same cause). */
static __always_inline int shed(void) {
    if (!shed_call(shed_state_get()))
        return 0;
    count_drop(DROP_RINGBUF_FULL);
    return 1;
}

/* Fills the fixed header; every field is written because the scratch buffer is reused. */
static __always_inline struct scratch *new_event(u8 kind, u64 pid_tgid, int fd, u8 op) {
    u32 cpu = bpf_get_smp_processor_id();
    struct scratch *s = scratch_buf.lookup(&cpu);
    if (!s)
        return 0;
    struct event_hdr *h = &s->hdr;
    h->ts_ns = bpf_ktime_get_ns();
    /* A close ends a connection the tracker named at its first event: no comm or cgroup id (two
     * helper calls; kind is a constant at every inlined call site, so the test costs nothing) */
    h->cgroup_id = kind == EVENT_CLOSE ? 0 : bpf_get_current_cgroup_id();
    h->size = 0;
    h->pid = pid_tgid >> 32;
    h->tid = (u32)pid_tgid;
    h->fd = fd;
    h->captured_len = 0;
    h->kind = kind;
    h->direction = 0;
    h->syscall = op;
    h->flags = 0;
    h->family = 0;
    h->sock_type = 0;
    h->peer_port = 0;
    h->lost = 0;
    __builtin_memset(h->peer_addr, 0, sizeof(h->peer_addr));
    if (kind == EVENT_CLOSE)
        __builtin_memset(h->comm, 0, sizeof(h->comm));
    else
        bpf_get_current_comm(&h->comm, sizeof(h->comm));
    h->local_port = 0;
    h->tail_len = 0;
    __builtin_memset(h->local_addr, 0, sizeof(h->local_addr));
    return s;
}

/* new_event for DATA on a tracked socket: each header field written once, from the entry. The
 * thread's comm and cgroup id only until an event of the entry has reached the ring (si->named):
 * the tracker names a connection from its first event and reads neither again, and the two
 * helper calls were ~0.2-0.4 us of a data call's ~1 us here (bench/README, eleventh round). */
static __always_inline struct scratch *new_data_event(u64 pid_tgid, struct sock_info *si, u8 op,
                                                      u8 dir, u64 ts, u64 size) {
    u32 cpu = bpf_get_smp_processor_id();
    struct scratch *s = scratch_buf.lookup(&cpu);
    if (!s)
        return 0;
    struct event_hdr *h = &s->hdr;
    h->ts_ns = ts;
    h->cgroup_id = si->named ? 0 : bpf_get_current_cgroup_id();
    h->size = size;
    h->pid = pid_tgid >> 32;
    h->tid = (u32)pid_tgid;
    h->fd = si->id_fd;
    h->captured_len = 0;
    h->kind = EVENT_DATA;
    h->direction = dir;
    h->syscall = op;
    h->flags = 0;
    h->family = si->family;
    h->sock_type = si->sock_type;
    h->peer_port = si->peer_port;
    h->lost = si->lost;
    __builtin_memcpy(h->peer_addr, si->peer_addr, sizeof(h->peer_addr));
    if (si->named)
        __builtin_memset(h->comm, 0, sizeof(h->comm));
    else
        bpf_get_current_comm(&h->comm, sizeof(h->comm));
    h->local_port = si->local_port;
    h->tail_len = 0;
    __builtin_memcpy(h->local_addr, si->local_addr, sizeof(h->local_addr));
    return s;
}

static __always_inline void peer_from_sock(struct event_hdr *h, struct sock_info *si) {
    h->family = si->family;
    h->sock_type = si->sock_type;
    h->peer_port = si->peer_port;
    __builtin_memcpy(h->peer_addr, si->peer_addr, sizeof(h->peer_addr));
    h->local_port = si->local_port;
    __builtin_memcpy(h->local_addr, si->local_addr, sizeof(h->local_addr));
}

/* Reads a user sockaddr_in/in6: returns its family, or 0 (and writes nothing) if unreadable or
 * neither inet family. *port in host byte order; addr gets 4 or 16 bytes, the rest zeroed.
 * (peer_from_user spells the same out: through this helper sock__exit_data's verification,
 * with its 128-iovec walks, went past the verifier's 1M-instruction budget.) */
static __always_inline u16 read_sockaddr(u64 sa, u16 *port, u8 *addr) {
    u16 fam = 0;
    u16 p = 0;
    if (!sa || read_user(&fam, sizeof(fam), (void *)sa) != 0)
        return 0;
    if (fam != AF_INET_ && fam != AF_INET6_)
        return 0;
    read_user(&p, sizeof(p), (void *)(sa + 2));
    __builtin_memset(addr, 0, 16);
    if (fam == AF_INET_)
        read_user(addr, 4, (void *)(sa + 4));
    else
        read_user(addr, 16, (void *)(sa + 8));
    *port = (p >> 8) | ((p & 0xff) << 8);
    return fam;
}

/* Reads a user sockaddr_in/in6 into the header's peer; returns its family (0 if unreadable or
 * neither inet family, leaving the header untouched). */
static __always_inline u16 peer_from_user(struct event_hdr *h, u64 sa) {
    u16 fam = 0;
    u16 port = 0;
    if (!sa || read_user(&fam, sizeof(fam), (void *)sa) != 0)
        return 0;
    if (fam != AF_INET_ && fam != AF_INET6_)
        return 0;
    read_user(&port, sizeof(port), (void *)(sa + 2));
    __builtin_memset(h->peer_addr, 0, sizeof(h->peer_addr));
    if (fam == AF_INET_)
        read_user(h->peer_addr, 4, (void *)(sa + 4));
    else
        read_user(h->peer_addr, 16, (void *)(sa + 8));
    h->family = fam;
    h->peer_port = (port >> 8) | ((port & 0xff) << 8);
    h->flags |= EVF_PEER_FROM_CALL;
    return fam;
}

/* Copies up to len user bytes to data[off...], never past MAX_PAYLOAD; returns the new offset. */
static __always_inline u32 copy_user(struct scratch *s, u32 off, u64 src, u64 len) {
    if (off >= MAX_PAYLOAD || len == 0)
        return off;
    u64 room = MAX_PAYLOAD - off;
    if (len > room)
        len = room;
    /* Keep clang from folding the checks below into the ones above: the verifier needs to
     * see each of off and len bounded on its own. */
    asm volatile("" : "+r"(len));
    asm volatile("" : "+r"(off));
    if (len > MAX_PAYLOAD || off > MAX_PAYLOAD)
        return off;
    if (read_user(&s->data[off], len, (void *)src) != 0) {
        s->hdr.flags |= EVF_READ_FAULT;
        count_drop(DROP_READ_FAULT);
        return off;
    }
    return off + (u32)len;
}

/* Copies up to len user bytes to the tail part of data (after a full head), from off on, never
 * past TAIL_BYTES; returns the new offset. A fault leaves it short: the caller drops the tail. */
static __always_inline u32 copy_tail(struct scratch *s, u32 off, u64 src, u64 len) {
    if (off >= TAIL_BYTES || len == 0)
        return off;
    u64 room = TAIL_BYTES - off;
    if (len > room)
        len = room;
    asm volatile("" : "+r"(len));  /* as in copy_user: each bounded on its own */
    asm volatile("" : "+r"(off));
    if (len > TAIL_BYTES || off > TAIL_BYTES)
        return off;
    if (read_user(&s->data[MAX_PAYLOAD + off], len, (void *)src) != 0) {
        count_drop(DROP_READ_FAULT);
        return off;
    }
    return off + (u32)len;
}

/* Where the tail of a call that moved `moved` bytes starts (0: the head holds it all): its last
 * TAIL_BYTES, never overlapping the head. */
static __always_inline u64 tail_from(u64 moved) {
    if (moved <= MAX_PAYLOAD)
        return 0;
    return moved - MAX_PAYLOAD > TAIL_BYTES ? moved - TAIL_BYTES : MAX_PAYLOAD;
}

/* Copies the tail (`len` bytes from byte walk_skip of iovec walk_tidx on, as tail_find found them)
 * into the tail part of data: at most TAIL_IOV iovecs, state in the map value as in walk_iov. */
static __always_inline void walk_tail(struct scratch *s, u64 len) {
#pragma clang loop unroll(disable)
    for (u32 j = 0; j < TAIL_IOV; j++) {
        u32 got = *(volatile u32 *)&s->walk_tail;
        u32 idx = *(volatile u32 *)&s->walk_tidx;
        u64 cnt = *(volatile u64 *)&s->walk_cnt;
        u64 base = *(volatile u64 *)&s->walk_iov;
        u64 skip = *(volatile u64 *)&s->walk_skip;
        if (idx == NO_IOV || idx + j >= cnt || got >= len)
            break;
        struct u_iovec v = {};
        if (read_user(&v, sizeof(v), (void *)(base + (u64)(idx + j) * sizeof(v))) != 0)
            break;
        if (v.len <= skip) {  /* an empty iovec */
            *(volatile u64 *)&s->walk_skip = 0;
            continue;
        }
        u64 n = v.len - skip;
        if (n > len - got)
            n = len - got;
        *(volatile u32 *)&s->walk_tail = copy_tail(s, got, v.base + skip, n);
        *(volatile u64 *)&s->walk_skip = 0;
    }
}

/* The socket path's programs leave the tail of an iovec call to the tail program ("tail copy"),
 * except at payload_bytes <= TAIL_MAX: there sock__recv_length's verification went past the
 * 1M-instruction budget with the lean loop (walk_iov) (64, 128, 256, 512 tried; not understood) */
#define TAIL_PROG (MAX_PAYLOAD > TAIL_BYTES)

/* Copies the first `moved` bytes spread over an iovec array, at most max_iov iovecs. A real
 * bounded loop (kernel >= 5.3; the ring buffer needs 5.8 anyway) instead of unrolled copies:
 * clang compiles one body (bcc's compile ~1.5 s less CPU), and the verifier walks one path per
 * iteration where it used to multiply (sock__exit_data: ~200k instructions processed instead
 * of ~765k at 4 KiB payloads). The walk's state lives in the scratch map value rather than in
 * registers: the verifier does not track what a map value holds, so every path through an
 * iteration (read fault or not, clipped or not, whichever syscall led here) reaches the next
 * one in the same state and all but the first are pruned. Kept in registers (even with an
 * `off &= mask` widening) the states differ and 16 iovecs already exceed the 1M budget.
 * This one copies the head alone (the socket path's: its tail is the tail program's; a datagram's
 * in sock__exit_dgram, which keeps no tail of a recvmsg's iovecs, as recvmmsg's datagrams never had one). */
static __always_inline u32 walk_iov(struct scratch *s, u64 iov, u64 iovcnt, u64 moved,
                                    const u32 max_iov) {
    *(volatile u32 *)&s->walk_off = 0;
    *(volatile u64 *)&s->walk_left = moved;
    *(volatile u64 *)&s->walk_iov = iov;
    *(volatile u64 *)&s->walk_cnt = iovcnt;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < max_iov; i++) {
        /* Read back from the map value, which the verifier does not track: every path through
         * the previous iteration leaves the same state behind, so all but one are pruned. */
        u32 off = *(volatile u32 *)&s->walk_off;
        u64 left = *(volatile u64 *)&s->walk_left;
        u64 cnt = *(volatile u64 *)&s->walk_cnt;
        u64 base = *(volatile u64 *)&s->walk_iov;
        if (i >= cnt || left == 0 || off >= MAX_PAYLOAD)
            break;
        struct u_iovec v = {};
        if (read_user(&v, sizeof(v), (void *)(base + (u64)i * sizeof(v))) != 0)
            break;
        u64 n = v.len < left ? v.len : left;
        /* before the copy, so that n is dead on copy_user's paths (5-10% fewer
         * instructions verified at payload_bytes 4096) */
        *(volatile u64 *)&s->walk_left = left - n;
        *(volatile u32 *)&s->walk_off = copy_user(s, off, v.base, n);
    }
    return *(volatile u32 *)&s->walk_off;
}

/* walk_iov, and the tail of a call larger than the head (from: where it starts, 0: none): the
 * syscall path's programs, which copy it themselves. With the lean loop above, sock__exit_data's
 * verification went past the 1M-instruction budget (it carries the mmsg walk too; not understood),
 * so they keep this one, as it was (sock__exit_dgram, without the mmsg walk, takes the lean one). */
static __always_inline u32 walk_iov_tail(struct scratch *s, u64 iov, u64 iovcnt, u64 moved,
                                         const u32 max_iov, u64 from) {
    *(volatile u32 *)&s->walk_off = 0;
    *(volatile u64 *)&s->walk_left = moved;
    *(volatile u64 *)&s->walk_iov = iov;
    *(volatile u64 *)&s->walk_cnt = iovcnt;
    *(volatile u64 *)&s->walk_from = from;
    if (from) {  /* a call no bigger than the head (nearly all) pays for none of the tail's state */
        *(volatile u64 *)&s->walk_pos = 0;
        *(volatile u32 *)&s->walk_tidx = NO_IOV;
        *(volatile u32 *)&s->walk_tail = 0;
    }
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < max_iov; i++) {
        u32 off = *(volatile u32 *)&s->walk_off;
        u64 left = *(volatile u64 *)&s->walk_left;
        u64 cnt = *(volatile u64 *)&s->walk_cnt;
        u64 base = *(volatile u64 *)&s->walk_iov;
        u64 tail_at = *(volatile u64 *)&s->walk_from;
        if (i >= cnt || left == 0 ||
            (off >= MAX_PAYLOAD && (!tail_at || *(volatile u32 *)&s->walk_tidx != NO_IOV)))
            break;
        struct u_iovec v = {};
        if (read_user(&v, sizeof(v), (void *)(base + (u64)i * sizeof(v))) != 0)
            break;
        u64 n = v.len < left ? v.len : left;
        *(volatile u32 *)&s->walk_off = copy_user(s, off, v.base, n);
        *(volatile u64 *)&s->walk_left = left - n;
        /* Only where the tail starts is noted here: copied in this loop, the tail's branches
         * multiplied the paths of each of the 128 iterations past the verifier's budget. */
        if (tail_at) {
            u64 pos = *(volatile u64 *)&s->walk_pos;
            if (*(volatile u32 *)&s->walk_tidx == NO_IOV && pos + n > tail_at) {
                *(volatile u32 *)&s->walk_tidx = i;
                *(volatile u64 *)&s->walk_skip = tail_at - pos;
            }
            *(volatile u64 *)&s->walk_pos = pos + n;
        }
    }
    if (from)
        walk_tail(s, moved - from);
    return *(volatile u32 *)&s->walk_off;
}

/* The head (and, on the syscall path, the tail) of an iovec call. */
static __always_inline u32 copy_iov(struct scratch *s, u64 iov, u64 iovcnt, u64 moved, const int raw) {
    if (raw)
        return walk_iov(s, iov, iovcnt, moved, MAX_IOV);
    return walk_iov_tail(s, iov, iovcnt, moved, MAX_IOV, tail_from(moved));
}

static __always_inline u32 copy_iov_short(struct scratch *s, u64 iov, u64 iovcnt, u64 moved) {
    return walk_iov_tail(s, iov, iovcnt, moved, MMSG_IOV, 0);  /* datagrams: no tail */
}

static __always_inline void save(u64 pid_tgid, struct inflight *in) {
    struct inflight *p = inflight.lookup(&pid_tgid);
    if (p) {
        __builtin_memcpy(p, in, sizeof(*in));
        return;
    }
    if (inflight.update(&pid_tgid, in) != 0)
        count_drop(DROP_INFLIGHT_FULL);
}

/* The args this thread's sys_enter saved, if any; the slot stays (op cleared) for its next call. */
static __always_inline int take(u64 pid_tgid, struct inflight *a) {
    struct inflight *p = inflight.lookup(&pid_tgid);
    if (!p || p->op == OP_NONE)
        return 0;
    __builtin_memcpy(a, p, sizeof(*a));
    p->op = OP_NONE;
    return 1;
}

/* The slice of x86-64 struct pt_regs (user registers saved at syscall entry; the ptrace ABI)
 * from r10 to orig_ax: one read instead of one per register. */
#define SYSCALL_REGS_OFF 56
struct syscall_regs {
    u64 r10, r9, r8, ax, cx, dx, si, di, orig_ax;
};
#define NR_CONNECT 42
#define NR_FCNTL 72

/* The calling task's syscall number and arguments as its entry saved them (orig_ax, di si dx r10
 * r8 r9), still there at the syscall's exit tracepoint: 0 when they cannot be read. Used only by
 * the programs of the socket data path (bpf_task_pt_regs: Linux >= 5.15, x86-64; the loader
 * attaches them only where the socket-layer tracepoints, Linux >= 6.3, are). Read by plain loads:
 * bpf_task_pt_regs gives a BTF pointer, whose fields the verifier checks against the kernel's
 * struct pt_regs and the JIT loads directly (a fault reads 0), instead of a bpf_probe_read_kernel
 * call (~15-20 ns per program run, twenty-seventh round). Only the fields a caller uses are loaded. */
static __always_inline int syscall_args(struct syscall_regs *r) {
    void *regs = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
    if (!regs)
        return 0;
    const struct syscall_regs *p = regs + SYSCALL_REGS_OFF;
    __builtin_memcpy(r, p, sizeof(*r));
    return 1;
}

/* struct sock_common's skc_family: at this offset since Linux 2.6 (after skc_addrpair,
 * skc_hash and skc_portpair); read on the shed path, and by adopt(). */
#define SKC_FAMILY_OFF 16
static __always_inline int sk_is_inet(u64 sk) {
    u16 family = 0;
    bpf_probe_read_kernel(&family, sizeof(family), (void *)(sk + SKC_FAMILY_OFF));
    return family == AF_INET_ || family == AF_INET6_;
}

/* The head of struct sock_common, laid out so since Linux 2.6: the only kernel struct read by
 * offset here (sk_is_inet, adopt). */
struct skc_head {
    u32 daddr;      /* skc_daddr: network order; an AF_INET6 socket's IPv4 peer (v4-mapped) */
    u32 rcv_saddr;  /* skc_rcv_saddr */
    u32 hash;       /* skc_hash */
    u16 dport;      /* skc_dport: network order */
    u16 num;        /* skc_num: the local port, host order */
    u16 family;     /* skc_family */
    u8 state;       /* skc_state: TCP_* (UDP: ESTABLISHED when connected, else CLOSE) */
    u8 _pad;
};
#define TCP_CLOSE_ 7
#define LOOPBACK4_IPV6_ 0x0600007fu  /* 127.0.0.6 (network order): what an AF_INET6 socket with a
                                        true IPv6 peer has in skc_daddr */

/* One end's address from the head: IPv4 as is, on an AF_INET6 socket as ::ffff:a.b.c.d; left
 * zero when the socket's end is true IPv6 and its offset further in struct sock is unknown. */
static __always_inline void head_addr(u8 *out, u16 family, u32 v4) {
    if (family == AF_INET_) {
        __builtin_memcpy(out, &v4, 4);
    } else if (v4 && v4 != LOOPBACK4_IPV6_) {
        out[10] = 0xff;
        out[11] = 0xff;
        __builtin_memcpy(out + 12, &v4, 4);
    }
}

/* Offsets further in struct sock, which depend on the kernel's build: the loader finds them in
 * the running kernel's BTF (hostagent/kernel/btf.py) and defines them, each pair whole; without
 * them adopt() does with the head alone, as it did before.
 *   SKC_V6_DADDR_OFF, SKC_V6_RCV_SADDR_OFF: sock_common's struct in6_addr ends (an AF_INET6
 *     socket's, v4-mapped ones included);
 *   SK_TYPE_OFF, SK_PROTOCOL_OFF: struct sock's u16 sk_type and sk_protocol (Linux >= 5.6). */
#define IPPROTO_UDP_ 17
#define IPPROTO_UDPLITE_ 136
#define IPPROTO_MPTCP_ 262

#if defined(TASK_FILES_OFF) && defined(FILES_FDT_OFF) && defined(FDT_MAX_FDS_OFF) && defined(FDT_FD_OFF) && \
    defined(FILE_PRIVATE_OFF) && defined(SOCKET_SK_OFF)
/* The socket (struct sock) the calling task's fd names, 0 if none or unreadable
 * (current->files->fdt->fd[fd]'s struct socket's sk; offsets from BTF as above); fd_names_sk:
 * whether it still names the socket sk: a data call whose tracepoint fires after another thread
 * closed its fd (the call holds its own reference to the file) must not leave an entry for an fd
 * that is gone, which the next socket given that number would take for its own. */
static __always_inline u64 sock_of_fd(u32 fd) {
    u64 p = bpf_get_current_task();  /* one variable down the chain: the data programs' stack is
                                        near its 512 bytes (seven apart went past it) */
    u32 max_fds = 0;
    if (bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + TASK_FILES_OFF)) != 0 || !p)
        return 0;
    if (bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + FILES_FDT_OFF)) != 0 || !p)
        return 0;
    if (bpf_probe_read_kernel(&max_fds, sizeof(max_fds), (void *)(p + FDT_MAX_FDS_OFF)) != 0 || fd >= max_fds)
        return 0;
    if (bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + FDT_FD_OFF)) != 0 || !p)
        return 0;
    if (bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + (u64)fd * sizeof(u64))) != 0 || !p)
        return 0;  /* the struct file */
    if (bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + FILE_PRIVATE_OFF)) != 0 || !p)
        return 0;  /* its struct socket */
    if (bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + SOCKET_SK_OFF)) != 0)
        return 0;
    return p;
}
static __always_inline int fd_names_sk(u32 fd, u64 sk) {
    u64 p = bpf_get_current_task();  /* written out, not sock_of_fd(fd) == sk: the data programs'
                                        verifier counts move with the least change here */
    u32 max_fds = 0;
    if (bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + TASK_FILES_OFF)) != 0 || !p)
        return 0;
    if (bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + FILES_FDT_OFF)) != 0 || !p)
        return 0;
    if (bpf_probe_read_kernel(&max_fds, sizeof(max_fds), (void *)(p + FDT_MAX_FDS_OFF)) != 0 || fd >= max_fds)
        return 0;
    if (bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + FDT_FD_OFF)) != 0 || !p)
        return 0;
    if (bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + (u64)fd * sizeof(u64))) != 0 || !p)
        return 0;  /* the struct file */
    if (bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + FILE_PRIVATE_OFF)) != 0 || !p)
        return 0;  /* its struct socket */
    if (bpf_probe_read_kernel(&p, sizeof(p), (void *)(p + SOCKET_SK_OFF)) != 0)
        return 0;
    return p == sk;
}
#define FD_NAMES_SK(fd, sk) fd_names_sk(fd, sk)
#define HAVE_SOCK_OF_FD 1
#else
#define FD_NAMES_SK(fd, sk) 1  /* not known: as before, the race may leave an entry */
#endif

/* Where the loader found the offsets of the fd chain and of the in6 ends, the socket data path
 * keeps no ends_by_sk: an accept() that names no peer reads it from the accepted socket itself
 * (peer_from_accepted), as adopt() does, instead of a hash insert at every server handshake and a
 * delete at every accept() (~0.3 us per accepted connection, twentieth round). */
#if defined(HAVE_SOCK_OF_FD) && defined(SKC_V6_DADDR_OFF) && defined(SKC_V6_RCV_SADDR_OFF)
#define ENDS_FROM_SOCK 1
#else
#define ENDS_FROM_SOCK 0
#endif
#define KEEPS_ENDS(regs) ((regs) && !ENDS_FROM_SOCK)  /* regs: the socket data path's programs */

/* ---- data syscalls: enter ------------------------------------------------------------------ */

/* The entry of (tgid, fd) when a data call on it is to be captured: a tracked inet socket of this
 * process (or one it inherited), not muted, and the ring not full (else the call is shed). si was
 * found current (lookup_sock_at) after e was read. */
static __always_inline struct sock_info *capturable(u32 tgid, struct sock_info *si, const struct epochs *e) {
    if (!e->ok || si->epoch_seen != e->sum) {
        u64 key = ((u64)tgid << 32) | si->id_fd;  /* muted by the fd events name it by */
        if (e->mute && muted.lookup(&key)) {
            if (si->h2)  /* its frames go by unwalked: where the next one starts is unknown */
                si->h2 |= H2_LOST_EGRESS | H2_LOST_INGRESS;
            return 0;
        }
        if (e->ok)
            si->epoch_seen = e->sum;
    }
    if (shed()) {
        si->lost++;  /* its next event tells the parser that a call is missing before it */
        return 0;
    }
    return si;
}

static __always_inline struct sock_info *data_socket(u32 tgid, u32 fd) {
    struct epochs e;
    epochs_now(&e);
    struct sock_info *si = lookup_or_inherit_at(tgid, fd, &e);
    return si ? capturable(tgid, si, &e) : 0;
}

/* A receive whose bytes are not (yet) taken from the stream: MSG_PEEK leaves them queued (the
 * read that takes them reports them), MSG_ERRQUEUE reads the error queue, not the stream. */
static __always_inline int not_the_streams_bytes(int flags) {
    return flags & (MSG_PEEK_ | MSG_ERRQUEUE_);
}

static __always_inline int enter_data(u8 op, u8 dir, u32 fd, u64 buf, u64 count, u64 addr,
                                      u64 addrlen) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (tgid == SELF_TGID || !socket_enabled())
        return 0;
    struct sock_info *si = data_socket(tgid, fd);
    if (!si)
        return 0;
    struct inflight in = {};
    in.buf = buf;
    in.addr = addr;
    in.addrlen = addrlen;
    in.fd = fd;
    in.count = count;
    in.op = op;
    in.direction = dir;
    if (dir == DIR_EGRESS)
        in.ts = bpf_ktime_get_ns();
    __builtin_memcpy(&in.si, si, sizeof(in.si));
    save(id, &in);
    return 0;
}

/* ---- data syscalls: exit ------------------------------------------------------------------- */

static __always_inline int emit_mmsg(u64 id, struct inflight *a, struct sock_info *si, long ret) {
    u32 n = ret;
    if (n > MAX_MMSG)
        count_drop(DROP_MMSG_TRUNCATED);
    u64 ts = a->direction == DIR_EGRESS ? a->ts : bpf_ktime_get_ns();
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_MMSG; i++) {
        if (i >= n)
            break;
        u64 m = a->buf + (u64)i * U_MMSGHDR_SIZE;
        struct u_msghdr mh = {};
        u32 moved = 0;
        if (read_user(&mh, sizeof(mh), (void *)m) != 0)
            break;
        read_user(&moved, sizeof(moved), (void *)(m + U_MMSG_LEN_OFF));
        struct scratch *s = new_data_event(id, si, a->op, a->direction, ts, moved);
        if (!s)
            return 0;
        if (mh.name && mh.namelen)
            peer_from_user(&s->hdr, mh.name);
        u32 len = copy_iov_short(s, mh.iov, mh.iovlen, moved);
        s->hdr.captured_len = len;
        if (submit(s, len) == 0 && !si->named) {
            si->named = 1;  /* si: this call's copy, for the batch's next messages */
            name_entry(id, a->fd);
        }
    }
    return 0;
}

/* ---- HTTP/2 frame chains -------------------------------------------------------------------
 * A big write on an HTTP/2 connection carries many frames (grpcio: HEADERS, WINDOW_UPDATE and a
 * 100 KB DATA frame per concurrent call, 400 KB in one sendmsg); a header block in the middle of
 * it is neither in the head nor in the tail, and without it every later header block of the
 * connection refers to HPACK entries the parser never saw. So on a connection whose preface went
 * by (sock_info.h2) each call's frames are followed by their 9-byte headers: a call larger than
 * the head hands on the headers of the frames from the head's cut to its end and the payloads of
 * all but DATA (struct h2_block, bpf/events.h) in place of its tail; every call moves h2_left on,
 * so the next one knows where its first frame starts (a read may begin inside a frame).
 * Cost: a call on any other socket pays two compares (sock_info.h2, its first 8 bytes); a call that
 * lies inside one frame (most reads of a big message) a subtraction; the rest are walked by a
 * program of their own, tail-called (bcc 0.26 cannot relocate bpf_loop callbacks): H2_ROUNDS
 * steps a program, the state in the CPU's scratch, the same program tail-called again while steps
 * remain (at most H2_CALLS times, the kernel's tail-call limit bounds it anyway); verified once,
 * a few thousand instructions, whatever the number of frames. A call copied whole (in the head,
 * or up to TAIL_BYTES past it in the tail) is walked in its copy, without helper calls, and keeps
 * its bytes: no frame block. What cannot be followed (a fault, the limits, a
 * full block) is counted (DROP_H2_UNWALKED) and the parser loses sync as it would have.
 * Connections picked up after their preface are not followed: the tail serves them, as before. */
#define H2_PREFACE 0x5448202a20495250ULL  /* "PRI * HT", little endian */
#define H2_HDR 9
#define H2_DATA 0
#define H2_ROUNDS 32               /* walk steps per program run */
#define H2_CALLS 30                /* program runs per call: 960 steps, ~300 frames of a writev
                                      whose headers and payloads are iovecs of their own */
#define H2_OUT (H2_BLOCK - (u32)sizeof(struct h2_block))
#define H2W_WALKING 0
#define H2W_DONE 1                 /* the frames reached the call's end */
#define H2W_LOST 2                 /* the chain broke (a fault, an implausible header, limits) */

/* A frame header a peer may send where the chain's position is a guess (RFC 9113 4.1, 6): a
 * defined type, no frame on a stream but the connection's own ones on stream 0. */
static __always_inline int h2_plausible(u8 type, u32 len, u32 sid) {
    if (type > 9 || len > (1 << 20))
        return 0;
    if (type == 4 || type == 6 || type == 7)  /* SETTINGS, PING, GOAWAY */
        return sid == 0;
    return type == 8 || sid != 0;             /* WINDOW_UPDATE: either */
}

static __always_inline void h2_set_left(struct sock_info *e, u8 dir, u32 left) {
    if (dir == DIR_INGRESS)  /* by name, not index: clang would build the address with an `|` */
        e->h2_left[1] = left;
    else
        e->h2_left[0] = left;
}

/* Takes the frame header now in s->h2hdr: emits it (and arranges its payload's copy) when the
 * frame does not end inside the head, then moves on to the next frame. */
static __always_inline void h2_frame(struct h2_walk *w, struct scratch *s) {
    u32 len = ((u32)s->h2hdr[0] << 16) | ((u32)s->h2hdr[1] << 8) | s->h2hdr[2];
    u8 type = s->h2hdr[3];
    u32 sid = (((u32)s->h2hdr[5] & 0x7f) << 24) | ((u32)s->h2hdr[6] << 16) | ((u32)s->h2hdr[7] << 8) |
              s->h2hdr[8];
    if (w->strict && !h2_plausible(type, len, sid)) {
        w->state = H2W_LOST;
        return;
    }
    w->strict = 0;
    u64 at = w->at;
    u64 end = at + H2_HDR + len;
    w->at = end;
    w->hgot = 0;
    if (end <= w->head || w->full)
        return;
    u64 body = type == H2_DATA ? 0 : len;
    if (at + H2_HDR + body > w->moved)
        body = w->moved - at - H2_HDR;  /* the rest of it is the next call's */
    u32 out = w->out;
    if (out > H2_OUT || H2_HDR + body > H2_OUT - out) {
        w->full = 1;  /* no room: the frames from here on are not in the block */
        return;
    }
    asm volatile("" : "+r"(out));
    if (out > H2_OUT)
        return;
    bpf_probe_read_kernel(&s->data[MAX_PAYLOAD + sizeof(struct h2_block) + out], H2_HDR, s->h2hdr);
    w->out = out + H2_HDR;
    if (w->start == w->moved)
        w->start = at;
    w->frames++;
    w->copy_at = at + H2_HDR;
    w->copy_left = body;
}

/* One step of the walk over user memory: the next iovec, a piece of a frame header, or a piece
 * of a payload to copy. Returns 0 when the walk is over (w->state says how). */
static __always_inline int h2_step(struct h2_walk *w, struct scratch *s) {
    if (!w->copy_left && !w->hgot && w->at >= w->moved) {
        w->state = H2W_DONE;
        return 0;
    }
    u64 end = w->vpos + w->vlen;
    if (end > w->moved)
        end = w->moved;
    u64 want = w->copy_left ? w->copy_at : w->at + w->hgot;
    if (want >= end) {  /* on to the next iovec */
        if (!w->iov || w->idx + 1 >= w->cnt || end >= w->moved) {
            w->state = H2W_LOST;  /* a frame header cut by the call's end: the next start is unknown */
            return 0;
        }
        w->vpos += w->vlen;
        w->idx++;
        struct u_iovec v = {};
        if (read_user(&v, sizeof(v), (void *)(w->iov + (u64)w->idx * sizeof(v))) != 0) {
            w->state = H2W_LOST;
            return 0;
        }
        w->vbase = v.base;
        w->vlen = v.len;
        return 1;
    }
    u64 n = end - want;
    u64 src = w->vbase + (want - w->vpos);
    if (w->copy_left) {
        if (n > w->copy_left)
            n = w->copy_left;
        u32 out = w->out;
        asm volatile("" : "+r"(n));
        asm volatile("" : "+r"(out));
        if (n > H2_OUT || out > H2_OUT ||
            read_user(&s->data[MAX_PAYLOAD + sizeof(struct h2_block) + out], n, (void *)src) != 0) {
            w->state = H2W_LOST;  /* h2_frame made room for it: only a fault gets here */
            return 0;
        }
        w->out = out + (u32)n;
        w->copy_at += n;
        w->copy_left -= n;
        return 1;
    }
    u32 got = w->hgot & 15;  /* < H2_HDR; the mask is what the verifier sees (h2hdr holds 15 + 9) */
    if (n > H2_HDR - got)
        n = H2_HDR - got;
    asm volatile("" : "+r"(n));
    if (got >= H2_HDR || n > H2_HDR || read_user(&s->h2hdr[got], n, (void *)src) != 0) {
        w->state = H2W_LOST;
        return 0;
    }
    w->hgot = got + (u32)n;
    if (w->hgot == H2_HDR)
        h2_frame(w, s);  /* else the header goes on in the next iovec */
    return w->state == H2W_WALKING;
}

/* One step of the walk over a call captured whole (its copy in s->data, the head and a tail
 * right after it): no helper call. */
static __always_inline int h2_small_step(struct h2_walk *w, struct scratch *s) {
    u64 at = w->at;
    if (at >= w->moved) {
        w->state = H2W_DONE;
        return 0;
    }
    if (at + H2_HDR > w->moved || at > MAX_PAYLOAD + TAIL_BYTES - H2_HDR) {
        w->state = H2W_LOST;  /* a frame header cut by the call's end */
        return 0;
    }
    u8 *h = &s->data[at];
    u32 len = ((u32)h[0] << 16) | ((u32)h[1] << 8) | h[2];
    if (w->strict) {
        u32 sid = (((u32)h[5] & 0x7f) << 24) | ((u32)h[6] << 16) | ((u32)h[7] << 8) | h[8];
        if (!h2_plausible(h[3], len, sid)) {
            w->state = H2W_LOST;
            return 0;
        }
        w->strict = 0;
    }
    w->at = at + H2_HDR + len;
    return 1;
}

/* The event's last words once the walk is over: where the next call's first frame starts, the
 * frame block in place of the tail (a big call), and the record itself. */
static __always_inline int h2_finish(struct scratch *s) {
    struct h2_walk *w = &s->h2w;
    u64 moved = w->moved;
    u8 lost_bit = H2_LOST_EGRESS << (w->dir & 1);
    struct sock_info *e = sockets.lookup(&w->key);
    if (e) {
        if (w->state == H2W_DONE) {
            e->h2 = (e->h2 | H2_CONN) & ~lost_bit;
            h2_set_left(e, w->dir, w->at - moved);
        } else {
            e->h2 |= H2_CONN | lost_bit;
        }
        if (e->lost != e->h2_lost) {  /* the other direction resynchronises on its own */
            e->h2_lost = e->lost;
            e->h2 |= H2_LOST_EGRESS | H2_LOST_INGRESS;
            if (w->state == H2W_DONE)
                e->h2 &= ~lost_bit;
        }
    }
    u32 captured = w->captured;  /* head and tail, as emit_data would have sent them */
    /* A call captured whole (up to TAIL_BYTES past the head) keeps its bytes: a block in place
     * of its tail would lose the DATA payload past the head (a body, gRPC message prefixes). */
    if (moved > captured && !(w->start == moved && w->state != H2W_DONE)) {
        struct h2_block b = {};
        b.start = w->start;
        b.from = w->from;
        b.complete = w->state == H2W_DONE && !w->full;
        b.frames = w->frames;
        if (!b.complete)
            count_drop(DROP_H2_UNWALKED);
        __builtin_memcpy(&s->data[MAX_PAYLOAD], &b, sizeof(b));
        u32 out = w->out;
        if (out > H2_OUT)
            out = H2_OUT;
        u32 blk = sizeof(b) + out;
        s->hdr.tail_len = blk | TAIL_IS_FRAMES;
        captured = w->head + blk;
    } else if (w->state != H2W_DONE && moved > captured) {
        count_drop(DROP_H2_UNWALKED);  /* lost at its first frame: the tail stays */
    }
    s->hdr.captured_len = captured;
    if (submit(s, captured) == 0 && !w->named && e)
        e->named = 1;
    return 0;
}

/* A walker program's run: H2_ROUNDS steps, then itself again, or the end. */
static __always_inline int h2_walk_run(void *ctx, int raw) {
    u32 cpu = bpf_get_smp_processor_id();
    struct scratch *s = scratch_buf.lookup(&cpu);
    if (!s)
        return 0;
    struct h2_walk *w = &s->h2w;
    int more = 1;
#pragma clang loop unroll(disable)
    for (int i = 0; i < H2_ROUNDS; i++) {
        more = w->small ? h2_small_step(w, s) : h2_step(w, s);
        if (!more)
            break;
    }
    if (more) {
        if (w->calls++ < H2_CALLS) {
            if (raw)
                h2_walk_raw.call(ctx, 0);
            else
                h2_walk_tp.call(ctx, 0);
        }
        w->state = H2W_LOST;  /* out of steps (or the tail call failed) */
    }
    return h2_finish(s);
}

int sock__h2_walk_raw(struct bpf_raw_tracepoint_args *ctx) {
    if (!SOCKET_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return h2_walk_run(ctx, 1);
}
int sock__h2_walk_tp(void *ctx) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return h2_walk_run(ctx, 0);
}

/* The walk of a call on an HTTP/2 connection (or one whose first bytes may be its preface), set
 * up in the scratch and handed to the walker program. The caller put the call's facts in s->h2w
 * (h2_note) and they are read back from there: the verifier does not track a map value, so every
 * path of the head and tail copies reaches this one in the same state and all but one are pruned
 * (taken as arguments, they multiplied sock__exit_data's paths past the 1M-instruction budget).
 * Returns only when the caller is to submit the event itself (nothing to walk, or no walker). */
static __always_inline void h2_begin(void *ctx, int raw, struct scratch *s) {
    struct h2_walk *w = &s->h2w;
    u8 dir = *(volatile u8 *)&w->dir;
    u8 h2 = *(volatile u8 *)&w->h2;
    u32 left = *(volatile u32 *)&w->left;
    u64 moved = *(volatile u64 *)&w->moved;
    u64 head = *(volatile u64 *)&w->head;
    u32 captured = *(volatile u32 *)&w->captured;
    u8 lost_bit = H2_LOST_EGRESS << (dir & 1);
    if (!(h2 & H2_CONN)) {
        /* the preface: both directions start with a frame, this one after it */
        if (head < 24 || *(u64 *)s->data != H2_PREFACE)
            return;
        h2 = H2_CONN;
        left = 24;
        struct sock_info *e = sockets.lookup(&w->key);  /* the syscall path has a copy of it */
        if (e) {
            e->h2 = H2_CONN;
            e->h2_left[0] = 0;
            e->h2_left[1] = 0;
            e->h2_lost = e->lost;
        }
    }
    if (!(h2 & lost_bit) && left >= moved) {
        /* inside one frame: the common case of a big message's reads costs this */
        struct sock_info *e = sockets.lookup(&w->key);
        if (e)
            h2_set_left(e, dir, left - moved);
        return;
    }
    if (head != moved && head != MAX_PAYLOAD) {
        struct sock_info *e = sockets.lookup(&w->key);  /* the head itself is short (a fault) */
        if (e)
            e->h2 |= lost_bit;
        return;
    }
    w->start = moved;
    w->at = h2 & lost_bit ? 0 : left;
    w->from = w->at;
    w->strict = h2 & lost_bit ? 1 : 0;
    w->small = moved <= captured;  /* whole: the head, or the head and a tail right after it */
    w->hgot = 0;
    w->out = 0;
    w->state = H2W_WALKING;
    w->frames = 0;
    w->full = 0;
    w->calls = 0;
    w->copy_left = 0;
    w->copy_at = 0;
    w->idx = 0;
    w->vpos = 0;
    u64 iov = *(volatile u64 *)&w->iov;
    if (iov && !w->small) {
        struct u_iovec v = {};
        if (!w->cnt || read_user(&v, sizeof(v), (void *)iov) != 0)
            return;
        w->vbase = v.base;
        w->vlen = v.len;
    } else {
        w->iov = 0;
        w->cnt = 1;
        w->vlen = moved;  /* vbase: the buffer, as h2_note put it */
    }
    if (raw)
        h2_walk_raw.call(ctx, 0);
    else
        h2_walk_tp.call(ctx, 0);
    struct sock_info *e = sockets.lookup(&w->key);  /* no walker loaded: the event goes as it is */
    if (e)
        e->h2 |= H2_CONN | lost_bit;
}

/* The facts of a call h2_begin works from, into s->h2w (see there). */
static __always_inline void h2_note(struct scratch *s, u64 id, u32 fd, struct sock_info *si, u8 dir, u64 buf,
                                    u64 iov, u64 iovcnt, u64 moved, u32 head, u32 captured) {
    struct h2_walk *w = &s->h2w;
    w->key = (id & 0xffffffff00000000ULL) | fd;
    w->dir = dir;
    w->h2 = si->h2;
    if (si->lost != si->h2_lost)  /* calls went by unwalked (shed, refused): the frames' place is unknown */
        w->h2 |= H2_LOST_EGRESS | H2_LOST_INGRESS;
    w->left = dir == DIR_INGRESS ? si->h2_left[1] : si->h2_left[0];
    w->named = si->named;
    w->vbase = buf;
    w->iov = buf ? 0 : iov;
    w->cnt = iovcnt;
    w->moved = moved;
    w->head = head;
    w->captured = captured;
}

/* ---- tail copy -----------------------------------------------------------------------------
 * The last TAIL_BYTES of an iovec call larger than the head are copied by a program of their own,
 * tail-called by the data program once the head is copied (as the frame walker is; bcc 0.26
 * cannot relocate bpf_loop callbacks). Looked for inside the head's iovec loop, the tail's place
 * doubled what the verifier goes through for the socket path's data programs, every start
 * (instructions processed at payload_bytes 4096: sock__recv_length 393k -> 177k, sock__send_length
 * 236k -> 98k, this program 10k; bench/README, nineteenth round). A call that fits in the head
 * pays one compare. The data program leaves the call's facts in s->h2w
 * (h2_note, read back here as h2_begin does) and s->walk_*; this program ends the event as the
 * data program would have: the tail, the HTTP/2 walk, the ring. The syscall path's programs copy
 * the tail themselves (see walk_iov). */

/* Where the tail starts (iovec walk_tidx, walk_skip bytes into it) among the first MAX_IOV
 * iovecs (those walk_iov goes through); the state in the map value, as in walk_iov. */
static __always_inline void tail_find(struct scratch *s) {
    *(volatile u64 *)&s->walk_pos = 0;
    *(volatile u32 *)&s->walk_tidx = NO_IOV;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_IOV; i++) {
        u64 pos = *(volatile u64 *)&s->walk_pos;
        u64 cnt = *(volatile u64 *)&s->walk_cnt;
        u64 base = *(volatile u64 *)&s->walk_iov;
        u64 at = *(volatile u64 *)&s->walk_from;
        if (i >= cnt)
            break;
        struct u_iovec v = {};
        if (read_user(&v, sizeof(v), (void *)(base + (u64)i * sizeof(v))) != 0)
            break;
        if (pos + v.len > at) {  /* the bytes fill the iovecs in order: no clipping needed */
            *(volatile u64 *)&s->walk_skip = at - pos;
            *(volatile u32 *)&s->walk_tidx = i;
            break;
        }
        *(volatile u64 *)&s->walk_pos = pos + v.len;
    }
}

static __always_inline int tail_run(void *ctx, int raw) {
    u32 cpu = bpf_get_smp_processor_id();
    struct scratch *s = scratch_buf.lookup(&cpu);
    if (!s)
        return 0;
    struct h2_walk *w = &s->h2w;
    u64 moved = *(volatile u64 *)&w->moved;
    u64 from = *(volatile u64 *)&s->walk_from;
    u64 len = *(volatile u64 *)&w->head;
    *(volatile u32 *)&s->walk_tail = 0;
    tail_find(s);
    walk_tail(s, moved - from);
    u32 tail = *(volatile u32 *)&s->walk_tail;
    /* kept only whole and right after a whole head, as emit_data keeps a buffer's */
    if (len != MAX_PAYLOAD || tail != moved - from)
        tail = 0;
    s->hdr.tail_len = from == MAX_PAYLOAD ? 0 : tail;
    s->hdr.captured_len = (u32)len + tail;
    if (w->sock_h2 || (len >= 24 && *(u64 *)s->data == H2_PREFACE)) {
        w->captured = (u32)len + tail;
        h2_begin(ctx, raw, s);
    }
    if (submit(s, *(volatile u32 *)&s->hdr.captured_len) == 0 && !w->named) {
        struct sock_info *e = sockets.lookup(&w->key);
        if (e)
            e->named = 1;
    }
    return 0;
}

int sock__tail_raw(struct bpf_raw_tracepoint_args *ctx) {
    if (!SOCKET_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return tail_run(ctx, 1);
}

/* One DATA event for a call that moved ret > 0 bytes: the header from the socket's entry, a
 * prefix of the bytes from the user buffer a->buf (or the iovecs it names), then the ring.
 * dgram (a constant): only a datagram receive (recvfrom, recvmsg) comes here, so the other calls'
 * branches and HTTP/2 (never on a datagram socket) are compiled out: the program that emits
 * those (sock__exit_dgram) has a third of the paths for the verifier to walk at each start. */
static __always_inline int emit_data(void *ctx, const int raw, const int dgram, u64 id, struct inflight *a,
                                     struct sock_info *si, long ret, u64 ts) {
    struct scratch *s = new_data_event(id, si, a->op, a->direction, ts, ret);
    if (!s)
        return 0;
    struct event_hdr *h = &s->hdr;
    /* One copy_user and one copy_iov call site: each is inlined, and a second 128-iovec walk
     * would add a second walk for the verifier to go through (see copy_iov). */
    u64 buf = 0;
    u64 iov = 0;
    u64 iovcnt = 0;
    if (dgram && a->op != OP_RECVFROM && a->op != OP_RECVMSG) {
        return 0;  /* not reached: sock_data defers only these two */
    } else if (a->op == OP_READ || a->op == OP_WRITE) {
        buf = a->buf;
    } else if (a->op == OP_SENDTO) {
        if (a->addr && a->addrlen)
            peer_from_user(h, a->addr);
        buf = a->buf;
    } else if (a->op == OP_RECVFROM) {
        int alen = 0;
        if (a->addr && a->addrlen &&
            read_user(&alen, sizeof(alen), (void *)a->addrlen) == 0 && alen > 0)
            peer_from_user(h, a->addr);
        buf = a->buf;
    } else if (a->op == OP_READV || a->op == OP_WRITEV) {
        iov = a->buf;
        iovcnt = a->count;
    } else if (a->op == OP_RECVMSG || a->op == OP_SENDMSG) {
        struct u_msghdr mh = {};
        if (read_user(&mh, sizeof(mh), (void *)a->buf) == 0) {
            if (mh.name && mh.namelen)  /* recvmsg: namelen was updated by the kernel */
                peer_from_user(h, mh.name);
            iov = mh.iov;
            iovcnt = mh.iovlen;
        }
    }
    u32 len = 0;
    u32 tail = 0;
    u64 from = tail_from(ret);
    if (buf) {
        len = copy_user(s, 0, buf, ret);
        if (from)
            tail = copy_tail(s, 0, buf + from, ret - from);
    } else if (iovcnt) {
        /* a datagram's iovecs: the head only (as recvmmsg's), the lean walk */
        if (dgram)
            *(volatile u32 *)&s->walk_tail = 0;
        len = copy_iov(s, iov, iovcnt, ret, (TAIL_PROG && raw) || dgram);
        if (TAIL_PROG && raw && from) {  /* the tail program ends the event ("tail copy"); returns only if none */
            h2_note(s, id, a->fd, si, a->direction, 0, iov, iovcnt, ret, len, len);
            s->h2w.sock_h2 = si->h2;
            *(volatile u64 *)&s->walk_from = from;
            *(volatile u32 *)&s->walk_tail = 0;
            tail_raw.call(ctx, 0);
        }
        tail = *(volatile u32 *)&s->walk_tail;  /* 0 when the tail program is missing */
    }
    /* OP_SENDFILE: the bytes never pass through user memory; size only. The tail is kept only
     * whole and right after a whole head (a fault leaves either short); an iovec call's is the
     * tail program's (without one, the event goes without a tail). */
    if (!from || len != MAX_PAYLOAD || tail != ret - from)
        tail = 0;
    /* A tail right after the head makes the call whole: plain payload, no tail to tell apart */
    h->tail_len = from == MAX_PAYLOAD ? 0 : tail;
    h->captured_len = len + tail;
    /* HTTP/2, or its preface: any other call pays these compares (an HTTP/1 POST or a PostgreSQL
     * Parse starts with 'P' too, hence all 8 bytes) */
    if (!dgram && (si->h2 || (len >= 24 && *(u64 *)s->data == H2_PREFACE))) {
        h2_note(s, id, a->fd, si, a->direction, buf, iov, iovcnt, ret, len, len + tail);
        h2_begin(ctx, raw, s);
    }
    if (submit(s, *(volatile u32 *)&h->captured_len) == 0 && !si->named)
        name_entry(id, a->fd);  /* si may be this call's copy of the entry (syscall path) */
    return 0;
}

/* The event(s) for the call whose arguments this thread's slot held (taken into *a). */
static __always_inline int finish_data(void *ctx, u64 id, struct inflight *a, long ret, const int dgram) {
    if (ret <= 0 || a->op < OP_READ || a->op > OP_SENDFILE)
        return 0;
    /* a->si: the entry as sys_enter saw it (closed by another thread meanwhile: still its bytes) */
    if (!dgram && (a->op == OP_RECVMMSG || a->op == OP_SENDMMSG))
        return emit_mmsg(id, a, &a->si, ret);
    /* Sent bytes are stamped when the write began: on loopback the reader wakes and returns
     * before the writer's syscall does, and a server's span must end before its client's. */
    u64 ts = a->direction == DIR_EGRESS ? a->ts : bpf_ktime_get_ns();
    return emit_data(ctx, 0, dgram, id, a, &a->si, ret, ts);
}

static __always_inline int exit_data(void *ctx, long ret) {
    u64 id = bpf_get_current_pid_tgid();
    struct inflight a;
    if (!take(id, &a))
        return 0;
    return finish_data(ctx, id, &a, ret, 0);
}

int sock__enter_read(struct tracepoint__syscalls__sys_enter_read *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return enter_data(OP_READ, DIR_INGRESS, args->fd, (u64)args->buf, 0, 0, 0);
}
int sock__enter_write(struct tracepoint__syscalls__sys_enter_write *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return enter_data(OP_WRITE, DIR_EGRESS, args->fd, (u64)args->buf, 0, 0, 0);
}
int sock__enter_readv(struct tracepoint__syscalls__sys_enter_readv *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return enter_data(OP_READV, DIR_INGRESS, args->fd, (u64)args->vec, args->vlen, 0, 0);
}
int sock__enter_writev(struct tracepoint__syscalls__sys_enter_writev *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return enter_data(OP_WRITEV, DIR_EGRESS, args->fd, (u64)args->vec, args->vlen, 0, 0);
}
int sock__enter_recvfrom(struct tracepoint__syscalls__sys_enter_recvfrom *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    if (not_the_streams_bytes(args->flags))
        return 0;
    return enter_data(OP_RECVFROM, DIR_INGRESS, args->fd, (u64)args->ubuf, 0, (u64)args->addr,
                      (u64)args->addr_len);
}
int sock__enter_sendto(struct tracepoint__syscalls__sys_enter_sendto *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return enter_data(OP_SENDTO, DIR_EGRESS, args->fd, (u64)args->buff, 0, (u64)args->addr,
                      (u64)args->addr_len);
}
int sock__enter_recvmsg(struct tracepoint__syscalls__sys_enter_recvmsg *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    if (not_the_streams_bytes(args->flags))
        return 0;
    return enter_data(OP_RECVMSG, DIR_INGRESS, args->fd, (u64)args->msg, 0, 0, 0);
}
int sock__enter_sendmsg(struct tracepoint__syscalls__sys_enter_sendmsg *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return enter_data(OP_SENDMSG, DIR_EGRESS, args->fd, (u64)args->msg, 0, 0, 0);
}
int sock__enter_recvmmsg(struct tracepoint__syscalls__sys_enter_recvmmsg *args) {
    return enter_data(OP_RECVMMSG, DIR_INGRESS, args->fd, (u64)args->mmsg, args->vlen, 0, 0);
}
int sock__enter_sendmmsg(struct tracepoint__syscalls__sys_enter_sendmmsg *args) {
    return enter_data(OP_SENDMMSG, DIR_EGRESS, args->fd, (u64)args->mmsg, args->vlen, 0, 0);
}
int sock__enter_sendfile64(struct tracepoint__syscalls__sys_enter_sendfile64 *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return enter_data(OP_SENDFILE, DIR_EGRESS, args->out_fd, 0, 0, 0, 0);
}

/* One exit program serves every data syscall: the saved op says which it was. */
int sock__exit_data(struct tracepoint__syscalls__sys_exit_read *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return exit_data(args, args->ret);
}

/* The socket data path's recvmmsg/sendmmsg exits: the only calls whose bytes it takes at a
 * syscall's exit besides a datagram receive (sock__exit_dgram), so the program holds their branch
 * alone (sock__exit_data, verified at each start, holds every data call's). */
int sock__exit_mmsg(struct tracepoint__syscalls__sys_exit_recvmmsg *args) {
    if (!SOCKET_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    long ret = args->ret;
    u64 id = bpf_get_current_pid_tgid();
    struct inflight a;
    if (!take(id, &a))
        return 0;
    if (ret <= 0 || (a.op != OP_RECVMMSG && a.op != OP_SENDMMSG))
        return 0;
    return emit_mmsg(id, &a, &a.si, ret);
}

/* ---- socket lifecycle ---------------------------------------------------------------------- */

/* socket()'s family and type (flags stripped) when its entry is wanted: inet, stream or datagram. */
static __always_inline int socket_wanted(int fam, int type) {
    return (fam == AF_INET_ || fam == AF_INET6_) && (type == SOCK_STREAM_ || type == SOCK_DGRAM_);
}

int sock__enter_socket(struct tracepoint__syscalls__sys_enter_socket *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) == SELF_TGID)
        return 0;
    int fam = args->family;
    int type = args->type & 0xf;  /* strip SOCK_NONBLOCK / SOCK_CLOEXEC */
    if (!socket_wanted(fam, type))
        return 0;
    struct inflight in = {};
    in.op = OP_SOCKET;
    in.count = fam;
    in.aux = type;
    save(id, &in);
    return 0;
}

static __always_inline int socket_made(u64 id, u32 fd, u16 fam, u8 type) {
    u32 tgid = id >> 32;
    struct epochs e;
    epochs_now(&e);  /* before the gen is read: see fresh_seen */
    struct sock_info si = {};
    si.gen = current_gen(tgid);
    si.epoch_seen = fresh_seen(&e);
    si.ts = bpf_ktime_get_ns();
    si.family = fam;
    si.sock_type = type;
    si.id_fd = fd;
    u64 key = ((u64)tgid << 32) | fd;
    put_sock(key, &si);
    unmute(key);
    remember_fd(tgid, fd);
    return 0;
}

int sock__exit_socket(struct tracepoint__syscalls__sys_exit_socket *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    u64 id = bpf_get_current_pid_tgid();
    struct inflight a;
    if (!take(id, &a))
        return 0;
    long fd = args->ret;
    if (fd < 0 || a.op != OP_SOCKET)
        return 0;
    return socket_made(id, fd, a.count, a.aux);
}

/* The socket data path's socket(), connect() and accept() have no enter program (each ran ~0.1-0.2
 * us per call, twentieth round): their exits read the arguments from the saved user registers,
 * as sock_data does. */
int sock__exit_socket_regs(void *ctx) {
    if (!SOCKET_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    struct tracepoint__syscalls__sys_exit_socket *args = ctx;
    long fd = args->ret;
    if (fd < 0)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) == SELF_TGID)
        return 0;
    struct syscall_regs r;
    if (!syscall_args(&r))
        return 0;
    int fam = r.di;
    int type = r.si & 0xf;  /* strip SOCK_NONBLOCK / SOCK_CLOEXEC */
    if (!socket_wanted(fam, type))
        return 0;
    return socket_made(id, fd, fam, type);
}

static __always_inline int enter_peer_call(u8 op, u32 fd, u64 addr, u64 addrlen) {
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) == SELF_TGID)
        return 0;
    struct inflight in = {};
    in.op = op;
    in.fd = fd;
    in.addr = addr;
    in.addrlen = addrlen;
    save(id, &in);
    return 0;
}

int sock__enter_connect(struct tracepoint__syscalls__sys_enter_connect *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return enter_peer_call(OP_CONNECT, args->fd, (u64)args->uservaddr, args->addrlen);
}

/* connect() returned on the TCP socket at sk without its ESTABLISHED in its own thread: the local
 * end from the connecting entry if ESTABLISHED came (in another context), else an entry for
 * sock__set_state to finish the socket's entry (key, ts) by. */
static __always_inline void connected_end(u64 sk, u64 key, struct sock_info *si) {
    struct connecting *c = connecting.lookup(&sk);
    if (!c) {
        struct connecting n = {};
        n.key = key;
        n.ts = si->ts;
        n.returned = 1;
        if (connecting.insert(&sk, &n) == 0)
            return;
        c = connecting.lookup(&sk);  /* ESTABLISHED came meanwhile and made it */
        if (!c)
            return;
    }
    if (c->established) {
        si->local_port = c->local.port;
        __builtin_memcpy(si->local_addr, c->local.addr, sizeof(si->local_addr));
        connecting.delete(&sk);
    } else {
        c->key = key;
        c->ts = si->ts;
        c->returned = 1;
    }
}

/* connect() on a->fd to the sockaddr at a->addr returned ret (0 or -EINPROGRESS); a->buf: the
 * socket's address when it went SYN_SENT in this call, a->aux 1 and a->si's local end when its
 * ESTABLISHED came in this thread too (on_syn_sent, established_in_connect). */
static __always_inline int connect_done(u64 id, struct inflight *a, long ret) {
    u32 tgid = id >> 32;
    struct scratch *s = new_event(EVENT_CONNECT, id, a->fd, OP_CONNECT);
    if (!s)
        return 0;
    struct event_hdr *h = &s->hdr;
    u16 fam = peer_from_user(h, a->addr);
    if (!fam)
        return 0;  /* AF_UNIX, AF_UNSPEC (UDP disconnect), ... */
    /* with the epochs, as accept_done: socket()'s entry found current gives the gen */
    struct epochs e;
    epochs_now(&e);
    struct sock_info *old = lookup_or_inherit_at(tgid, a->fd, &e);
    struct sock_info si = {};
    si.gen = old ? old->gen : current_gen(tgid);
    /* socket()'s entry found unmuted and current since the epochs last moved: so is the new one */
    si.epoch_seen = old && e.ok && old->epoch_seen == e.sum ? e.sum : 0;
    si.family = fam;
    si.peer_port = h->peer_port;
    __builtin_memcpy(si.peer_addr, h->peer_addr, sizeof(si.peer_addr));
    si.id_fd = a->fd;
    if (old) {
        si.ts = old->ts;  /* the socket's age, not the connection's: fork shares the socket */
        si.id_fd = old->id_fd;
        h->fd = old->id_fd;
        si.sock_type = old->sock_type;
        si.local_port = old->local_port;  /* bind() before connect() */
        __builtin_memcpy(si.local_addr, old->local_addr, sizeof(si.local_addr));
    } else {
        si.ts = h->ts_ns;  /* sock_type 0: socket() was before we attached */
    }
    u64 key = ((u64)tgid << 32) | a->fd;
    /* TCP: the local end, if ESTABLISHED came already (blocking connect); else leave key and ts
     * for sock__set_state to find this entry by. */
    if (a->aux) {
        si.local_port = a->si.local_port;  /* ESTABLISHED in this thread: on_syn_sent */
        __builtin_memcpy(si.local_addr, a->si.local_addr, sizeof(si.local_addr));
    } else if (a->buf) {
        connected_end(a->buf, key, &si);
    }
    h->sock_type = si.sock_type;
    h->local_port = si.local_port;
    __builtin_memcpy(h->local_addr, si.local_addr, sizeof(h->local_addr));
    h->size = ret == 0 ? 0 : 1;  /* 1: non-blocking connect still in progress */
    /* the record in the ring names the connection: see accept_done. a->buf: the socket's
     * address when it went SYN_SENT in this call (TCP) */
    si.named = socket_enabled() && submit(s, 0) == 0 && named_at_open(a->buf, &si);
    if (old)
        __builtin_memcpy(old, &si, sizeof(si));  /* socket()'s entry, looked up above */
    else
        put_sock(key, &si);
    remember_fd(tgid, a->fd);
    return 0;
}

int sock__exit_connect(struct tracepoint__syscalls__sys_exit_connect *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    u64 id = bpf_get_current_pid_tgid();
    struct inflight a;
    if (!take(id, &a))
        return 0;
    long ret = args->ret;
    if (a.op != OP_CONNECT || (ret != 0 && ret != -EINPROGRESS_))
        return 0;
    return connect_done(id, &a, ret);
}

/* The socket data path's: no enter program; the thread's inflight slot holds OP_CONNECT only
 * when the socket went SYN_SENT inside this call (on_syn_sent with regs), and is cleared here
 * whatever connect() returned. */
int sock__exit_connect_regs(void *ctx) {
    if (!SOCKET_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    struct tracepoint__syscalls__sys_exit_connect *args = ctx;
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) == SELF_TGID)
        return 0;
    long ret = args->ret;
    struct inflight a = {};
    struct inflight *p = inflight.lookup(&id);
    if (p && p->op == OP_CONNECT) {
        a.buf = p->buf;
        a.aux = p->aux;
        a.fd = p->fd;
        a.si.local_port = p->si.local_port;
        __builtin_memcpy(a.si.local_addr, p->si.local_addr, sizeof(a.si.local_addr));
        p->op = OP_NONE;
    }
    if (ret != 0 && ret != -EINPROGRESS_)
        return 0;
    struct syscall_regs r;
    if (!syscall_args(&r))
        return 0;
    if (a.buf && a.fd != (u32)r.di) {
        a.buf = 0;  /* not this call's socket (cannot be: SYN_SENT is inside connect()) */
        a.aux = 0;
    }
    a.op = OP_CONNECT;
    a.fd = r.di;
    a.addr = r.si;
    a.addrlen = r.dx;
    return connect_done(id, &a, ret);
}

static __always_inline int enter_accept(u32 fd, u64 addr, u64 addrlen) {
    return enter_peer_call(OP_ACCEPT, fd, addr, addrlen);
}
int sock__enter_accept(struct tracepoint__syscalls__sys_enter_accept *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return enter_accept(args->fd, (u64)args->upeer_sockaddr, (u64)args->upeer_addrlen);
}
int sock__enter_accept4(struct tracepoint__syscalls__sys_enter_accept4 *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return enter_accept(args->fd, (u64)args->upeer_sockaddr, (u64)args->upeer_addrlen);
}

#if ENDS_FROM_SOCK
/* accept(fd, NULL, NULL) (libuv, so every Node.js server) on the socket data path: the peer from
 * the accepted socket (the head of struct sock_common, and an AF_INET6 socket's in6 peer: what
 * its handshake reported) into its entry, and the local end when the listener gave none. The
 * ACCEPT record stays without the peer, as before; the data records carry it, as when the first
 * data call filled it in from ends_by_sk. The handshake's slot (or its accepted entry) is freed,
 * as an accept() that names the peer frees it. */
static __always_inline void peer_from_accepted(u32 fd, struct sock_info *si) {
    u64 sk = sock_of_fd(fd);
    struct skc_head hd = {};
    if (!sk || bpf_probe_read_kernel(&hd, sizeof(hd), (void *)sk) != 0 || !hd.dport)
        return;
    struct accepted_key k = {};
    if (hd.family == AF_INET6_)
        bpf_probe_read_kernel(k.addr, sizeof(k.addr), (void *)(sk + SKC_V6_DADDR_OFF));
    else if (hd.family == AF_INET_)
        __builtin_memcpy(k.addr, &hd.daddr, 4);
    else
        return;
    k.port = (hd.dport >> 8) | ((hd.dport & 0xff) << 8);
    k.family = hd.family;
    si->peer_port = k.port;
    __builtin_memcpy(si->peer_addr, k.addr, sizeof(si->peer_addr));
    if (!si->local_port) {
        si->local_port = hd.num;
        if (hd.family == AF_INET6_)
            bpf_probe_read_kernel(si->local_addr, sizeof(si->local_addr), (void *)(sk + SKC_V6_RCV_SADDR_OFF));
        else
            __builtin_memcpy(si->local_addr, &hd.rcv_saddr, 4);
    }
    struct handshake *hs = handshake_of(&k);
    if (hs && hs->end.sk == sk)
        hs->end.sk = 0;
    else if (accepted.lookup(&k))
        accepted.delete(&k);
}
#endif

/* accept() / accept4() on the listener a_fd returned the new socket's fd ret (>= 0); a_addr and
 * a_addrlen: the caller's sockaddr and int * for the peer (0 when it passed NULL). */
static __always_inline int accept_done(u64 id, u32 a_fd, u64 a_addr, u64 a_addrlen, long ret, const int regs) {
    u32 tgid = id >> 32;
    struct scratch *s = new_event(EVENT_ACCEPT, id, (int)ret, OP_ACCEPT);
    if (!s)
        return 0;
    struct event_hdr *h = &s->hdr;
    int alen = 0;
    u16 fam = 0;
    if (a_addr && a_addrlen &&
        read_user(&alen, sizeof(alen), (void *)a_addrlen) == 0 && alen > 0)
        fam = peer_from_user(h, a_addr);
    /* lookup_or_inherit: pre-fork servers accept on the listener their parent bound. With the
     * epochs: a listener found current since the last exit costs no proc_gen lookup, and its gen
     * is the process's (lookup_sock_at, inherit), so the new entry takes it from there */
    struct epochs ep;
    epochs_now(&ep);
    struct sock_info *listener = lookup_or_inherit_at(tgid, a_fd, &ep);
    struct sock_info si = {};
    u64 sk = 0;  /* the accepted socket's address, when its handshake says */
    if (fam) {
        /* the exact local end, from when the handshake completed (sock__set_state) */
        struct accepted_key k = {};
        __builtin_memcpy(k.addr, h->peer_addr, sizeof(k.addr));
        k.port = h->peer_port;
        k.family = fam;
        struct handshake *hs = handshake_of(&k);
        if (hs) {
            si.local_port = hs->end.local.port;
            __builtin_memcpy(si.local_addr, hs->end.local.addr, sizeof(si.local_addr));
            sk = hs->end.sk;
            hs->end.sk = 0;  /* the slot is free again */
            if (KEEPS_ENDS(regs))
                ends_by_sk.delete(&sk);  /* the peer is known: nothing for the data calls to fill */
        } else {
            struct accepted_end *e = accepted.lookup(&k);
            if (e) {
                si.local_port = e->local.port;
                __builtin_memcpy(si.local_addr, e->local.addr, sizeof(si.local_addr));
                sk = e->sk;
                if (KEEPS_ENDS(regs))
                    ends_by_sk.delete(&sk);
                accepted.delete(&k);
            }
        }
    }
    if (listener) {
        if (!fam)
            fam = listener->family;  /* accept(fd, NULL, NULL): the peer comes with the data */
        if (!si.local_port) {
            /* what bind() named: a wildcard address gives the port only */
            si.local_port = listener->local_port;
            __builtin_memcpy(si.local_addr, listener->local_addr, sizeof(si.local_addr));
        }
    }
    if (!fam)
        return 0;  /* not an inet listener, or one we cannot tell */
#if ENDS_FROM_SOCK
    if (regs && !h->peer_port)
        peer_from_accepted((u32)ret, &si);
#endif
    si.gen = listener ? listener->gen : current_gen(tgid);
    si.ts = h->ts_ns;  /* the record's stamp: a clock read less */
    si.epoch_seen = fresh_seen(&ep);
    si.family = fam;
    si.sock_type = SOCK_STREAM_;
    si.id_fd = (u32)ret;
    if (h->peer_port) {
        si.peer_port = h->peer_port;
        __builtin_memcpy(si.peer_addr, h->peer_addr, sizeof(si.peer_addr));
    }
    h->family = fam;
    h->sock_type = SOCK_STREAM_;
    h->local_port = si.local_port;
    __builtin_memcpy(h->local_addr, si.local_addr, sizeof(h->local_addr));
    /* the record in the ring names the connection (comm, cgroup id): the socket's data records
     * leave both out from the first on (new_data_event) */
    si.named = socket_enabled() && submit(s, 0) == 0 && named_at_open(sk, &si);
    u64 key = ((u64)tgid << 32) | (u32)ret;
    put_sock(key, &si);
    unmute(key);
    remember_fd(tgid, (u32)ret);
    return 0;
}
static __always_inline int exit_accept(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    struct inflight a;
    if (!take(id, &a))
        return 0;
    if (ret < 0 || a.op != OP_ACCEPT)
        return 0;
    return accept_done(id, a.fd, a.addr, a.addrlen, ret, 0);
}
int sock__exit_accept(struct tracepoint__syscalls__sys_exit_accept *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return exit_accept(args->ret);
}
int sock__exit_accept4(struct tracepoint__syscalls__sys_exit_accept4 *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return exit_accept(args->ret);
}

/* The socket data path's accept() and accept4() (no enter program: see sock__exit_socket_regs). */
int sock__exit_accept_regs(void *ctx) {
    if (!SOCKET_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    struct tracepoint__syscalls__sys_exit_accept *args = ctx;
    long ret = args->ret;
    if (ret < 0)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) == SELF_TGID)
        return 0;
    struct syscall_regs r;
    if (!syscall_args(&r))
        return 0;
    return accept_done(id, r.di, r.si, r.dx, ret, 1);
}

/* Forget at enter: once close() starts the fd number may be reused by another thread. */
int sock__enter_close(struct tracepoint__syscalls__sys_enter_close *args) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (tgid == SELF_TGID)
        return 0;
    u32 fd = args->fd;
    /* lookup_or_inherit: a child closing an inherited socket it never used must settle it, or
     * the fd number, reused for a file, would be taken for the socket later */
    struct epochs e;
    epochs_now(&e);
    struct sock_info *si = lookup_or_inherit_at(tgid, fd, &e);
    if (!si)
        return 0;
    u64 key = ((u64)tgid << 32) | fd;
    if (socket_enabled()) {
        struct scratch *s = new_event(EVENT_CLOSE, id, si->id_fd, OP_CLOSE);
        if (s) {
            peer_from_sock(&s->hdr, si);
            submit(s, 0);
        }
    }
    si->gen = CLOSED_GEN;  /* the slot stays for the fd number's next socket (put_sock) */
    /* found not muted since the last mute (capturable): nothing to delete. A mute racing this close
     * is undone by the fd number's next socket() or accept() */
    if (si->id_fd != fd || !e.ok || si->epoch_seen != e.sum)
        unmute(key);
    return 0;
}

/* Pid-reuse guard: when a process dies its socket entries must stop matching, without walking
 * the map. Bumping the tgid's generation makes every older entry stale (see lookup_sock). */
int sock__process_exit(void *ctx) {  /* reads no field: bcc allows one fn per tp struct */
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    inflight.delete(&id);  /* every thread: its slot (see take); its send stamp goes with it */
    struct send_start *ss = send_slot(id);
    if (ss && ss->tid == (u32)id)
        ss->sk = 0;  /* a thread given this id later finds no stamp of this one's */
    if ((u32)id != tgid)
        return 0;
    u64 gen = bpf_ktime_get_ns();
    proc_gen.update(&tgid, &gen);
    u32 zero = 0;
    u32 *xe = exit_epoch.lookup(&zero);
    if (xe)  /* after the gen: an entry found current at the old epoch is checked again */
        __sync_fetch_and_add(xe, 1);
    recent.delete(&tgid);  /* a new process with this pid has no sockets yet */
    return 0;
}

/* Runs in the parent (current) for every new task, process or thread. Children of processes
 * with sockets (a "recent" entry) get a link with a snapshot of the parent's recent sockets;
 * children of a linked process that has none of its own yet get a link without one, so that a
 * double fork (daemonising) still reaches the grandparent's sockets (INHERIT_LEVELS). Any
 * other child's pid loses a stale link, so a link always belongs to the task that has the pid. */
int sock__fork(struct tracepoint__sched__sched_process_fork *args) {
    u32 parent = bpf_get_current_pid_tgid() >> 32;  /* args->parent_pid is the forking tid */
    u32 child = args->child_pid;
    struct recent_fds *r = recent.lookup(&parent);
    if (parent == SELF_TGID || (!r && !fork_link.lookup(&parent))) {
        fork_link.delete(&child);
        return 0;
    }
    u32 zero = 0;
    struct fork_link *l = link_tmp.lookup(&zero);
    if (!l)
        return 0;
    l->parent = parent;
    l->_pad = 0;
    l->parent_gen = current_gen(parent);
    l->fork_ts = bpf_ktime_get_ns();
    l->closed_lo = NO_FD;
    l->closed_hi = 0;
#pragma unroll
    for (int i = 0; i < RECENT_FDS; i++) {
        u32 fd = r ? r->fd[i] : NO_FD;
        struct sock_info *si = fd == NO_FD ? 0 : lookup_sock(parent, fd);
        if (si) {
            l->fd[i] = fd;
            __builtin_memcpy(&l->info[i], si, sizeof(*si));
        } else {
            l->fd[i] = NO_FD;
        }
    }
    fork_link.update(&child, l);
    if (socket_enabled()) {
        struct scratch *s = new_event(EVENT_FORK, ((u64)child << 32) | child, -1, OP_NONE);
        if (s) {
            s->hdr.size = parent;
            submit(s, 0);
        }
    }
    return 0;
}

/* execve() closes every O_CLOEXEC fd without a close() we could see (and Python's subprocess
 * closes the rest with close_range first): the new program's fds are its own. Sockets it
 * really keeps (inetd's dup2 to 0 and 1 before exec) were copied to real entries already. */
int sock__exec(void *ctx) {  /* reads no field: proc__exec has this tracepoint's struct */
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    fork_link.delete(&tgid);
    return 0;
}

/* close_range(fd, max_fd, 0): the fds are gone without naming each; inherit() skips them. */
int sock__enter_close_range(struct tracepoint__syscalls__sys_enter_close_range *args) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct fork_link *l = fork_link.lookup(&tgid);
    if (!l || (args->flags & 4))  /* CLOSE_RANGE_CLOEXEC: closed at exec, which drops the link */
        return 0;
    u32 lo = args->fd;
    u32 hi = args->max_fd;
    if (lo < l->closed_lo)
        l->closed_lo = lo;
    if (hi > l->closed_hi)
        l->closed_hi = hi;
    return 0;
}

/* ---- dup(), dup2(), dup3(), fcntl(F_DUPFD) -------------------------------------------------- */

/* Servers that hand a connection to a child often move it: busybox httpd's child dup2()s the
 * accepted socket to fds 0 and 1 (so do inetd and systemd's Accept=yes), then reads one and
 * writes the other. The copy shares the original's entry, id_fd included, so events name both
 * by the same fd and the tracker sees one connection; sock__exit_dup makes it from the fd saved
 * here (the syscall data path; the socket path's sock__exit_dup_regs has no enter program). */
static __always_inline int save_dup(u32 oldfd) {
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) == SELF_TGID)
        return 0;
    struct inflight in = {};
    in.op = OP_DUP;
    in.fd = oldfd;
    save(id, &in);
    int zero = 0;
    u64 *pending = dup_pending.lookup(&zero);
    if (pending)
        __sync_fetch_and_add(pending, 1);
    return 0;
}

/* One enter program serves dup, dup2 and dup3 (oldfd and dup's fildes sit at the same offset). */
int sock__enter_dup(struct tracepoint__syscalls__sys_enter_dup2 *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return save_dup(args->oldfd);
}

/* fcntl(F_DUPFD / F_DUPFD_CLOEXEC) is a dup() too: CPython's os.dup(), socket.dup() and
 * socket.fromfd() make their copies this way, as does Go's (*TCPConn).File(). Every other fcntl
 * command (O_NONBLOCK, locks) returns after one comparison. */
#define F_DUPFD_ 0
#define F_DUPFD_CLOEXEC_ 1030
int sock__enter_fcntl(struct tracepoint__syscalls__sys_enter_fcntl *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    u32 cmd = args->cmd;
    if (cmd != F_DUPFD_ && cmd != F_DUPFD_CLOEXEC_)
        return 0;
    return save_dup(args->fd);
}

/* newfd (ret) is a copy of oldfd: it shares oldfd's entry, if any, after ending what newfd was. */
static __always_inline int dup_done(u64 id, u32 oldfd, long ret) {
    if (ret < 0 || (u32)ret == oldfd)
        return 0;
    u32 tgid = id >> 32;
    u32 newfd = ret;
    u64 nkey = ((u64)tgid << 32) | newfd;
    /* whatever newfd was is closed now: a tracked socket ends, an inherited one is settled */
    struct sock_info *gone = lookup_or_inherit(tgid, newfd);
    if (gone) {
        if (socket_enabled()) {
            struct scratch *s = new_event(EVENT_CLOSE, id, gone->id_fd, OP_DUP);
            if (s) {
                peer_from_sock(&s->hdr, gone);
                submit(s, 0);
            }
        }
        sockets.delete(&nkey);
    }
    muted.delete(&nkey);
    struct sock_info *src = lookup_or_inherit(tgid, oldfd);
    if (!src)
        return 0;
    struct sock_info si = {};
    __builtin_memcpy(&si, src, sizeof(si));
    sockets.update(&nkey, &si);
    remember_fd(tgid, newfd);
    return 0;
}

int sock__exit_dup(struct tracepoint__syscalls__sys_exit_dup *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    int zero = 0;
    u64 *pending = dup_pending.lookup(&zero);
    if (!pending || *pending == 0)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    struct inflight a;
    if (!take(id, &a))
        return 0;
    if (a.op == OP_DUP)
        __sync_fetch_and_add(pending, -1);
    if (a.op != OP_DUP)
        return 0;
    return dup_done(id, a.fd, args->ret);
}

/* The socket data path's dup(), dup2(), dup3() and fcntl() (no enter program, as its socket(),
 * connect() and accept(): see sock__exit_socket_regs): the exit reads oldfd, and fcntl's command,
 * from the saved user registers. The enter was a hit of the syscall tracepoint's perf machinery
 * and a program on every fcntl() of every process (gunicorn makes two per request, F_GETFD and
 * F_SETFD; wrk two per connection), for the rare F_DUPFD: fcntl() +85 ns -> +49 ns per call in a
 * tight loop, more in a server whose caches are cold (twenty-seventh round). */
int sock__exit_dup_regs(void *ctx) {
    if (!SOCKET_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    struct tracepoint__syscalls__sys_exit_dup *args = ctx;
    long ret = args->ret;
    if (ret < 0)
        return 0;
    struct syscall_regs r;
    if (!syscall_args(&r))
        return 0;
    if (r.orig_ax == NR_FCNTL && (u32)r.si != F_DUPFD_ && (u32)r.si != F_DUPFD_CLOEXEC_)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) == SELF_TGID)
        return 0;
    return dup_done(id, r.di, ret);
}

/* ---- local endpoints ----------------------------------------------------------------------- */

int sock__enter_bind(struct tracepoint__syscalls__sys_enter_bind *args) {
    return enter_peer_call(OP_BIND, args->fd, (u64)args->umyaddr, args->addrlen);
}

/* A bound address is the socket's local end (a wildcard gives the port only); accept() copies
 * a listener's to the sockets it accepts when the handshake did not say better. */
int sock__exit_bind(struct tracepoint__syscalls__sys_exit_bind *args) {
    u64 id = bpf_get_current_pid_tgid();
    struct inflight a;
    if (!take(id, &a))
        return 0;
    if (args->ret != 0 || a.op != OP_BIND)
        return 0;
    u32 tgid = id >> 32;
    u8 addr[16] = {};
    u16 port = 0;
    u16 fam = read_sockaddr(a.addr, &port, addr);
    if (!fam)
        return 0;
    struct sock_info *si = lookup_or_inherit(tgid, a.fd);
    if (si) {
        si->local_port = port;
        __builtin_memcpy(si->local_addr, addr, sizeof(si->local_addr));
    } else {
        struct sock_info n = {};  /* socket() was before we attached: type unknown */
        n.gen = current_gen(tgid);
        n.ts = bpf_ktime_get_ns();
        n.family = fam;
        n.id_fd = a.fd;
        n.local_port = port;
        __builtin_memcpy(n.local_addr, addr, sizeof(n.local_addr));
        u64 key = ((u64)tgid << 32) | a.fd;
        sockets.update(&key, &n);
    }
    remember_fd(tgid, a.fd);
    return 0;
}

/* A connect()ing thread enters SYN_SENT in its own context, inside connect(): tell the rest of
 * the connect the socket's address through the thread's inflight slot. The source port is not
 * chosen yet at this point (tcp_v4_connect picks it just after). An ESTABLISHED in this same
 * thread before connect() returns (loopback, so every local client: bench/README, twentieth
 * round) leaves the local end in the slot (aux 1, si.local_*): no connecting entry to insert,
 * look up and delete. An earlier socket's entry at this address is stale: gone. */
static __always_inline int on_syn_sent(u64 sk, const int regs) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (tgid == SELF_TGID)
        return 0;
    struct inflight *p = inflight.lookup(&id);
    if (regs) {
        /* no enter program marked the slot: the thread must be inside connect() (its saved
         * syscall number), and the slot says so from here to connect()'s exit */
        struct syscall_regs r;
        if (!syscall_args(&r) || r.orig_ax != NR_CONNECT)
            return 0;  /* TCP fast open, io_uring, kernel sockets: not tracked here */
        if (!p) {
            struct inflight in = {};
            in.op = OP_CONNECT;
            in.fd = r.di;
            in.buf = sk;
            save(id, &in);
            if (connecting.lookup(&sk))
                connecting.delete(&sk);
            return 0;
        }
        p->op = OP_CONNECT;
        p->fd = r.di;
    } else if (!p || p->op != OP_CONNECT) {
        return 0;  /* TCP fast open, io_uring, kernel sockets: not tracked here */
    }
    p->buf = sk;
    p->aux = 0;
    if (connecting.lookup(&sk))
        connecting.delete(&sk);
    return 0;
}

/* SYN_SENT -> ESTABLISHED in the thread that is inside connect() on this socket: 1 when the local
 * end went into its slot (see on_syn_sent). */
static __always_inline int established_in_connect(u64 sk, struct endpoint *local) {
    u64 id = bpf_get_current_pid_tgid();
    struct inflight *p = inflight.lookup(&id);
    if (!p || p->op != OP_CONNECT || p->buf != sk)
        return 0;
    p->si.local_port = local->port;
    __builtin_memcpy(p->si.local_addr, local->addr, sizeof(p->si.local_addr));
    p->aux = 1;
    return 1;
}

/* listen() moved a socket to LISTEN, in the listening process's context: tell identity who
 * serves (address, port) now, so the first client call to a server started a moment ago names
 * its peer (the listener table's own refresh reads /proc, seconds or a miss later). A socket
 * listen() bound itself (no bind() before) has no port yet at this point: no event, the refresh
 * finds it. Its LISTEN -> CLOSE is not reported: a newer listen() replaces the entry, and the
 * refresh drops stale ones. */
static __always_inline int on_listen(struct endpoint *local) {
    u64 id = bpf_get_current_pid_tgid();
    if (local->port == 0 || (id >> 32) == SELF_TGID || !socket_enabled())
        return 0;
    struct scratch *s = new_event(EVENT_LISTEN, id, -1, OP_NONE);
    if (!s)
        return 0;
    s->hdr.family = local->family;
    s->hdr.sock_type = SOCK_STREAM_;
    s->hdr.local_port = local->port;
    __builtin_memcpy(s->hdr.local_addr, local->addr, sizeof(s->hdr.local_addr));
    submit(s, 0);
    return 0;
}

/* Tracepoint fields only: skaddr is used as an opaque key, never dereferenced. regs: the socket
 * data path's, whose connect() has no enter program (see on_syn_sent). Defined after the program
 * that names the tracepoint's struct (bcc writes the struct just before it). */
static __always_inline int set_state(void *ctx, const int regs);
int sock__set_state(struct tracepoint__sock__inet_sock_set_state *args) {
    if (!SYSCALL_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return set_state(args, 0);
}
int sock__set_state_regs(void *ctx) {
    if (!SOCKET_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return set_state(ctx, 1);
}

static __always_inline int set_state(void *ctx, const int regs) {
    struct tracepoint__sock__inet_sock_set_state *args = ctx;
    if (args->protocol != IPPROTO_TCP_)
        return 0;
    int newstate = args->newstate;
    int oldstate = args->oldstate;
    u64 sk = (u64)args->skaddr;
    if (newstate == TCP_SYN_SENT_)
        return on_syn_sent(sk, regs);
    if (newstate != TCP_ESTABLISHED_ && newstate != TCP_LISTEN_)
        return 0;
    u16 fam = args->family;
    struct endpoint local = {};
    local.port = args->sport;
    local.family = fam;
    if (fam == AF_INET_)
        __builtin_memcpy(local.addr, args->saddr, 4);
    else
        __builtin_memcpy(local.addr, args->saddr_v6, 16);
    if (newstate == TCP_LISTEN_)
        return on_listen(&local);
    if (oldstate == TCP_SYN_SENT_) {
        if (established_in_connect(sk, &local))
            return 0;
        /* client, any task's context (softirq): connect() takes it from the entry, or has
         * returned and left its entry's key in one */
        struct connecting *c = connecting.lookup(&sk);
        if (!c) {
            struct connecting n = {};
            __builtin_memcpy(&n.local, &local, sizeof(local));
            n.established = 1;
            if (connecting.insert(&sk, &n) == 0)
                return 0;
            c = connecting.lookup(&sk);  /* connect() returned meanwhile and made it */
            if (!c)
                return 0;
        }
        __builtin_memcpy(&c->local, &local, sizeof(local));
        c->established = 1;
        if (!c->returned)
            return 0;  /* connect() has not returned: sys_exit_connect takes it from here */
        struct sock_info *si = sockets.lookup(&c->key);
        if (si && si->ts == c->ts) {
            si->local_port = local.port;
            __builtin_memcpy(si->local_addr, local.addr, sizeof(si->local_addr));
        }
        connecting.delete(&sk);
    } else if (oldstate == TCP_SYN_RECV_) {
        /* server: before accept() returns; keyed by the peer accept() will report */
        struct accepted_key k = {};
        if (fam == AF_INET_)
            __builtin_memcpy(k.addr, args->daddr, 4);
        else
            __builtin_memcpy(k.addr, args->daddr_v6, 16);
        k.port = args->dport;
        k.family = fam;
        struct accepted_end a = {};
        __builtin_memcpy(&a.local, &local, sizeof(local));
        a.sk = sk;
        if (!handshake_put(&k, &a))
            accepted.update(&k, &a);
        if (KEEPS_ENDS(regs)) {
            struct conn_ends e = {};  /* for an accept() that will not name the peer */
            __builtin_memcpy(&e.local, &local, sizeof(local));
            __builtin_memcpy(&e.peer, &k, sizeof(k));
            ends_by_sk.update(&sk, &e);
        }
    }
    return 0;
}

/* ---- process group ------------------------------------------------------------------------- */

/* Every fork (threads too: a thread that execs becomes its group's leader, whose entry is the
 * process's). One map update; fork itself costs tens of microseconds. */
int proc__fork(void *ctx) {  /* bcc made this tracepoint's struct for sock__fork, above */
    struct tracepoint__sched__sched_process_fork *args = ctx;
    u32 parent = bpf_get_current_pid_tgid() >> 32;  /* args->parent_pid is the forking tid */
    u32 child = args->child_pid;
    exec_parent.update(&child, &parent);
    return 0;
}

int proc__exec(struct tracepoint__sched__sched_process_exec *args) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (tgid == SELF_TGID)
        return 0;
    struct scratch *s = new_event(EVENT_EXEC, id, -1, OP_NONE);
    if (!s)
        return 0;
    u32 *parent = exec_parent.lookup(&tgid);
    /* payload: the executed file name, NUL excluded */
    unsigned short off = args->data_loc_filename & 0xFFFF;
    int n = bpf_probe_read_kernel_str(s->data, MAX_PAYLOAD < 256 ? MAX_PAYLOAD : 256,
                                      (char *)args + off);
    u32 len = n > 0 ? n - 1 : 0;
    s->hdr.captured_len = len;
    s->hdr.size = parent ? *parent : 0;
    submit(s, len);
    return 0;
}

/* A container's or a unit's cgroup is made before its first process runs, and a short-lived
 * one (docker run ... redis-cli) is often removed before the agent reads its exec event: the id
 * the exec event carries is then resolved from this event, which precedes it in the ring. Only
 * the unified hierarchy (root 0): bpf_get_current_cgroup_id() gives ids of that one. */
int proc__cgroup_mkdir(struct tracepoint__cgroup__cgroup_mkdir *args) {
    u64 id = bpf_get_current_pid_tgid();
    if (args->root != 0 || (id >> 32) == SELF_TGID)
        return 0;
    struct scratch *s = new_event(EVENT_CGROUP, id, -1, OP_NONE);
    if (!s)
        return 0;
    unsigned short off = args->data_loc_path & 0xFFFF;
    int n = bpf_probe_read_kernel_str(s->data, MAX_PAYLOAD < 256 ? MAX_PAYLOAD : 256, (char *)args + off);
    u32 len = n > 0 ? n - 1 : 0;
    s->hdr.captured_len = len;
    s->hdr.size = args->id;
    submit(s, len);
    return 0;
}

int proc__exit(struct tracepoint__sched__sched_process_exit *args) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if ((u32)id != tgid || tgid == SELF_TGID)
        return 0;  /* threads end all the time; the process ends with its leader */
    struct scratch *s = new_event(EVENT_EXIT, id, -1, OP_NONE);
    if (s)
        submit(s, 0);
    return 0;
}


/* ---- data on a socket, from the socket layer ------------------------------------------------
 * sock:sock_send_length / sock:sock_recv_length (kernel >= 6.3) fire once per sock_sendmsg /
 * sock_recvmsg return, so only for socket I/O. Attached as raw tracepoints (no perf buffer) they
 * replace the sys_enter/sys_exit pair of every data syscall but the *mmsg ones: one program per
 * call instead of two, no inflight slot (but for a datagram's receive, finished at the syscall's
 * exit: see sock_data), and a file or pipe read/write runs no program at all.
 * The syscall and its arguments come from the task's user registers (x86-64 syscall ABI,
 * orig_ax = number, di si dx r10 r8 r9 = arguments); a socket call made by anything else than
 * these syscalls (io_uring, the kernel's own sockets, 32-bit processes) is not captured, as with
 * the syscall tracepoints. The loader uses these only where the kernel has them on x86-64
 * ([probes] data_hooks). */
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDFILE 40
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47



int sock__send_start(struct bpf_raw_tracepoint_args *ctx) {
    if (!SOCKET_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) == SELF_TGID)
        return 0;
    struct shed_state *st = shed_state_get();
    if (!st || st->on)
        return 0;  /* shed, the call needs no stamp; resumed meanwhile, it is stamped at its end */
    u32 epoch = st->epoch;
    u64 sk = ctx->args[0];
    u64 msg = ctx->args[1];
    struct send_start *p = send_slot(id);
    if (!p)
        return 0;
    if (p->sk == sk && p->msg == msg && p->epoch == epoch && p->tid == (u32)id)
        return 0;  /* the same call's next segment: keep its first stamp */
    p->tid = (u32)id;
    p->sk = sk;
    p->msg = msg;
    p->ts = bpf_ktime_get_ns();
    p->epoch = epoch;
    return 0;
}

/* A data call on an inet socket this process has no entry for, though not the agent's: one it
 * received from another process (SCM_RIGHTS: Node's cluster workers, systemd's Accept=yes
 * services; pidfd_getfd). Its entry is made from the socket itself as the loader's seeding makes
 * one for a socket opened before the agent started: first seen mid-way, ends as the kernel has
 * them. With the type and protocol offsets: a TCP socket not closed is a stream, a UDP one
 * (connected or not) a datagram socket, anything else (raw, ICMP) is left alone. Without them:
 * stream only when skc_state says so; a connected one (ESTABLISHED, a TCP or a connected UDP
 * socket) gets sock_type 0, as a socket whose socket() came before the agent; an unconnected
 * datagram socket (CLOSE) is left as before, raw and ICMP sockets having that state too. Only on
 * a miss: a tracked socket's calls never come here. */
static __always_inline struct sock_info *adopt(u32 tgid, u32 fd, u64 sk) {
    struct skc_head h = {};
    if (bpf_probe_read_kernel(&h, sizeof(h), (void *)sk) != 0)
        return 0;
    if (h.family != AF_INET_ && h.family != AF_INET6_)
        return 0;
#if defined(SK_TYPE_OFF) && defined(SK_PROTOCOL_OFF)
    u16 type = 0, proto = 0;
    bpf_probe_read_kernel(&type, sizeof(type), (void *)(sk + SK_TYPE_OFF));
    bpf_probe_read_kernel(&proto, sizeof(proto), (void *)(sk + SK_PROTOCOL_OFF));
    u8 sock_type;
    if (type == SOCK_STREAM_ && (proto == IPPROTO_TCP_ || proto == IPPROTO_MPTCP_) && h.state != TCP_CLOSE_)
        sock_type = SOCK_STREAM_;
    else if (type == SOCK_DGRAM_ && (proto == IPPROTO_UDP_ || proto == IPPROTO_UDPLITE_))
        sock_type = SOCK_DGRAM_;  /* connected or not: its peers come with each call, as seeded */
    else
        return 0;  /* raw, ICMP (ping), SCTP, a closed TCP socket */
#else
    if (h.state == TCP_CLOSE_)
        return 0;  /* an unconnected datagram socket, or a raw or ICMP one: left as before */
    u8 sock_type = h.state == TCP_ESTABLISHED_ ? 0 : SOCK_STREAM_;
#endif
    if (!FD_NAMES_SK(fd, sk))
        return 0;  /* the fd was closed (or given another file) while the call ran */
    u64 key = ((u64)tgid << 32) | fd;
    struct adopted_sk *prev = adopted.lookup(&sk);
    if (prev && prev->tgid == tgid && prev->id_fd != fd) {
        u64 first_key = ((u64)tgid << 32) | prev->id_fd;
        struct sock_info *first = sockets.lookup(&first_key);
        if (first && first->gen != CLOSED_GEN && first->ts == prev->ts) {
            struct sock_info copy;  /* as dup() shares a tracked socket's entry, id_fd included */
            __builtin_memcpy(&copy, first, sizeof(copy));
            put_sock(key, &copy);
            remember_fd(tgid, fd);
            return sockets.lookup(&key);
        }
    }
    struct sock_info si = {};
    si.gen = current_gen(tgid);
    si.ts = bpf_ktime_get_ns();  /* a child forked before it came has no copy of it */
    si.family = h.family;
    si.sock_type = sock_type;
    si.peer_port = (h.dport >> 8) | ((h.dport & 0xff) << 8);
    si.local_port = h.num;
#if defined(SKC_V6_DADDR_OFF) && defined(SKC_V6_RCV_SADDR_OFF)
    if (h.family == AF_INET6_) {  /* true IPv6 or v4-mapped, as the kernel has them */
        bpf_probe_read_kernel(si.peer_addr, sizeof(si.peer_addr), (void *)(sk + SKC_V6_DADDR_OFF));
        bpf_probe_read_kernel(si.local_addr, sizeof(si.local_addr), (void *)(sk + SKC_V6_RCV_SADDR_OFF));
    } else
#endif
    {
        head_addr(si.peer_addr, h.family, h.daddr);
        head_addr(si.local_addr, h.family, h.rcv_saddr);
    }
    si.id_fd = fd;
    put_sock(key, &si);  /* over the slot of a socket closed on this fd number, if any */
    remember_fd(tgid, fd);
    struct adopted_sk n = {.tgid = tgid, .id_fd = fd, .ts = si.ts};
    adopted.update(&sk, &n);
    return sockets.lookup(&key);
}

/* A stream socket whose peer accept() did not name: the two ends its handshake reported, kept
 * under the socket's address (sock__set_state), once. */
static __always_inline void ends_from_handshake(u64 sk, struct sock_info *si) {
    struct conn_ends *e = ends_by_sk.lookup(&sk);
    if (!e)
        return;
    si->peer_port = e->peer.port;
    __builtin_memcpy(si->peer_addr, e->peer.addr, sizeof(si->peer_addr));
    if (!si->local_port) {
        si->local_port = e->local.port;
        __builtin_memcpy(si->local_addr, e->local.addr, sizeof(si->local_addr));
    }
    struct accepted_key k;  /* what accept() would have taken, had it named the peer */
    __builtin_memcpy(&k, &e->peer, sizeof(k));
    accepted.delete(&k);
    ends_by_sk.delete(&sk);
}

static __always_inline int sock_data(void *ctx, u64 sk, long ret, int flags, u8 dir) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (tgid == SELF_TGID || (dir == DIR_INGRESS && not_the_streams_bytes(flags)))
        return 0;
    struct shed_state *shedding = shed_state_get();  /* looked up once: shed, mark, stamp */
    int wanted = ret > 0 && socket_enabled();
    /* Shed before anything is looked up or read: at saturation nearly every call ends here,
     * and the socket's entry is not needed to mark the loss (its slot in shed_marks is).
     * Counted when the socket is an inet one (a Unix socket's calls are never captured); an
     * inet socket that is not tracked or is muted is counted too while the ring is full. A shed
     * send leaves its start stamp behind: stamped in an earlier epoch, no later call takes it. */
    if (wanted && shed_call(shedding)) {
        if (sk_is_inet(sk)) {
            count_drop(DROP_RINGBUF_FULL);
            u32 *mark = shed_mark(sk);
            if (mark) {
                *mark = shedding->epoch;
                /* The episode ended meanwhile: a call captured since, which read the epochs before
                 * this mark, may have skipped the marks (epoch_seen); a new epoch makes the
                 * socket's next call look. */
                if (!*(volatile u32 *)&shedding->on)
                    __sync_fetch_and_add(&shedding->epoch, 1);
            }
        }
        return 0;
    }
    u64 ts = 0;
    if (dir == DIR_EGRESS) {
        /* consumed whatever follows, so a later call never takes this call's stamp */
        struct send_start *st = send_slot(id);
        if (st && st->sk == sk && st->tid == (u32)id) {
            if (shedding && st->epoch == shedding->epoch)
                ts = st->ts;
            st->sk = 0;
        }
    }
    if (!wanted)
        return 0;
    struct syscall_regs r;
    if (!syscall_args(&r))
        return 0;
    struct inflight a = {};
    a.fd = r.di;
    a.buf = r.si;
    a.direction = dir;
    switch (r.orig_ax) {
    case NR_READ: a.op = OP_READ; break;
    case NR_WRITE: a.op = OP_WRITE; break;
    case NR_READV: a.op = OP_READV; a.count = r.dx; break;
    case NR_WRITEV: a.op = OP_WRITEV; a.count = r.dx; break;
    case NR_RECVFROM: a.op = OP_RECVFROM; a.addr = r.r8; a.addrlen = r.r9; break;
    case NR_SENDTO: a.op = OP_SENDTO; a.addr = r.r8; a.addrlen = r.r9; break;
    case NR_RECVMSG: a.op = OP_RECVMSG; break;
    case NR_SENDMSG: a.op = OP_SENDMSG; break;
    case NR_SENDFILE: a.op = OP_SENDFILE; break;
    default: return 0;  /* recvmmsg/sendmmsg: their syscall programs; io_uring, the kernel */
    }
    struct epochs e;
    epochs_now(&e);
    struct sock_info *si = lookup_or_inherit_at(tgid, a.fd, &e);
    if (!si)
        si = adopt(tgid, a.fd, sk);
    /* no shed episode (nor exit, nor mute) since its last captured call: its mark is as it was */
    int marked = !si || !e.ok || si->epoch_seen != e.sum;
    if (si)
        si = capturable(tgid, si, &e);
    if (!si)
        return 0;
    u32 *mark = marked ? shed_mark(sk) : 0;
    if (mark) {
        u16 m = (u16)*mark;
        if (!si->named)
            si->shed_seen = m;  /* a new entry to the tracker: nothing of it to resynchronise */
        else if (m != si->shed_seen) {
            si->shed_seen = m;
            si->lost++;  /* shed (its slot's epoch changed): this event tells the parser */
        }
    }
    if (!si->peer_port && si->sock_type == SOCK_STREAM_)
        ends_from_handshake(sk, si);
    if (dir == DIR_INGRESS && si->sock_type == SOCK_DGRAM_ && (a.op == OP_RECVFROM || a.op == OP_RECVMSG)) {
        /* A datagram's sender reaches the caller's sockaddr only after this tracepoint: the
         * syscall's exit program (attached for these two) emits the event, as on the syscall
         * path. A stream socket's peer is known from its entry, so TCP needs no such detour. */
        int zero = 0;
        u64 *pending = dgram_pending.lookup(&zero);
        struct inflight *prev = inflight.lookup(&id);
        if (prev && (prev->op == OP_RECVFROM || prev->op == OP_RECVMSG)) {
            /* a receive deferred before the exits were detached, its exit gone with them */
            count_drop(DROP_RINGBUF_FULL);
            prev->op = OP_NONE;
            if (pending)
                __sync_fetch_and_add(pending, -1);
        }
        u32 gen = dgram_exit_gen();
        if (!(gen & 1)) {
            /* The exits are detached (the agent backed off from a hopeless overload, see
             * BpfCapture.set_backed_off): the receive is lost as a shed call is, counted with
             * the ring's overload, and the socket's next event tells the parser. */
            count_drop(DROP_RINGBUF_FULL);
            si->lost++;
            return 0;
        }
        __builtin_memcpy(&a.si, si, sizeof(a.si));
        a.dgen = gen;
        save(id, &a);
        if (pending)
            __sync_fetch_and_add(pending, 1);
        return 0;
    }
    return emit_data(ctx, 1, 0, id, &a, si, ret, ts ? ts : bpf_ktime_get_ns());
}

/* sys_exit of recvfrom/recvmsg on the socket path: emits a datagram receive sock_data deferred. */
int sock__exit_dgram(struct tracepoint__syscalls__sys_exit_recvfrom *args) {
    if (!SOCKET_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    int zero = 0;
    u64 *pending = dgram_pending.lookup(&zero);
    if (!pending || *pending == 0)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    struct inflight a;
    if (!take(id, &a))
        return 0;
    __sync_fetch_and_add(pending, -1);
    if (a.dgen != dgram_exit_gen()) {
        count_drop(DROP_RINGBUF_FULL);  /* deferred before a detach: this exit is another call's */
        return 0;
    }
    return finish_data(args, id, &a, args->ret, 1);
}

/* raw tracepoint arguments: (struct sock *sk, int ret, int flags) */
int sock__send_length(struct bpf_raw_tracepoint_args *ctx) {
    if (!SOCKET_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return sock_data(ctx, ctx->args[0], (int)ctx->args[1], (int)ctx->args[2], DIR_EGRESS);
}
int sock__recv_length(struct bpf_raw_tracepoint_args *ctx) {
    if (!SOCKET_PROGRAMS)
        return 0;  /* the other data path's: compiled empty (DATA_PATH) */
    return sock_data(ctx, ctx->args[0], (int)ctx->args[1], (int)ctx->args[2], DIR_INGRESS);
}
