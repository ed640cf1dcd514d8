/* The one definition of what the kernel side hands to Python.
 *
 * Every record in the "events" ring buffer is a struct event_hdr followed by
 * hdr.captured_len payload bytes (0 <= captured_len <= MAX_PAYLOAD + TAIL_BYTES). Records are
 * variable-size so that a 40-byte request does not cost a MAX_PAYLOAD copy.
 *
 * DATA of a call that moved more than MAX_PAYLOAD bytes: the payload is the first MAX_PAYLOAD
 * bytes (the head), then the call's last hdr.tail_len bytes (the tail, which starts at byte
 * hdr.size - hdr.tail_len of what moved; 0 when it could not be copied). A call of at most
 * MAX_PAYLOAD + TAIL_BYTES is copied whole (captured_len == size, tail_len 0). A big HTTP/2 write
 * ends with the frames that close its streams (gRPC trailers): without them the connection's
 * HPACK table is lost for good (see hostagent/protocols/http2_frames.py).
 *
 * On an HTTP/2 connection (sock_info.h2) the frames of a call not copied whole (more than
 * MAX_PAYLOAD + TAIL_BYTES) are followed instead, from the first one that does not end inside the
 * head to the call's end, and the tail is replaced by a frame block (hdr.tail_len = its length | TAIL_IS_FRAMES): struct h2_block, then per frame its
 * 9-byte header as on the wire, followed by its payload unless it is DATA (whose payload is not
 * copied). Header blocks anywhere in a write of any size (HEADERS of later streams in a
 * multi-stream gRPC write) and every frame boundary are known that way.
 *
 * hostagent/probes/events.py mirrors these structs with ctypes; a root test
 * compiles this header with bcc and checks sizes and offsets against the mirror.
 * Numeric ids mirror hostagent/model.py (EventKind, Direction): change both or neither.
 *
 * No packed structs: every field sits at its natural alignment and padding is spelled out.
 */
#ifndef HOSTAGENT_EVENTS_H
#define HOSTAGENT_EVENTS_H

#ifndef MAX_PAYLOAD
#define MAX_PAYLOAD 1024   /* bytes of payload copied per event; -DMAX_PAYLOAD=... */
#endif
#ifndef TAIL_MAX
/* Bytes copied from the end of a call larger than MAX_PAYLOAD. What ends grpcio's and Go's
 * big writes: the trailers HEADERS (9 + 30..100 bytes, more with custom trailing metadata; grpcio
 * 1.x: 39), WINDOW_UPDATEs (13 each), a PING (17). 512 holds them with room to spare, and the
 * more of the write's end is copied, the likelier the frame after the cut starts in it. */
#define TAIL_MAX 512
#endif
#define TAIL_BYTES (MAX_PAYLOAD < TAIL_MAX ? MAX_PAYLOAD : TAIL_MAX)
#ifndef H2_BLOCK
/* Bytes of a frame block (header included): 4 concurrent 100 KB gRPC requests need ~300 (12
 * frame headers, 4 header blocks of 20-30 bytes); 4 MiB of 16 KiB DATA frames 2.3 KiB. */
#define H2_BLOCK 4096
#endif
#define TAIL_IS_FRAMES 0x8000      /* event_hdr.tail_len: the payload's end is a frame block */
#define PAYLOAD_EXTRA (TAIL_BYTES > H2_BLOCK ? TAIL_BYTES : H2_BLOCK)  /* after the head */

/* The start of a frame block; offsets are in the call's bytes. */
struct h2_block {
    unsigned int start;            /*  0 where the first frame of the block starts */
    unsigned int from;             /*  4 where the call's first frame started (the rest of an
                                         earlier call's frame came before it) */
    unsigned int complete;         /*  8 1: the frames go on to the call's end; 0: they stop
                                         early (counted as DROP_H2_UNWALKED) */
    unsigned int frames;           /* 12 frames in the block */
};                                 /* 16 */

enum event_kind {
    EVENT_DATA = 1,     /* bytes moved on a tracked socket */
    EVENT_CONNECT = 2,  /* connect() returned 0 or -EINPROGRESS */
    EVENT_ACCEPT = 3,   /* accept()/accept4() returned a new socket (fd = new fd) */
    EVENT_CLOSE = 4,    /* close() of a tracked socket; comm and cgroup_id left empty */
    EVENT_EXEC = 5,     /* sched_process_exec; payload = filename, size = the tgid that forked
                           the process (0: its fork was before the probes were attached) */
    EVENT_EXIT = 6,     /* sched_process_exit of a thread group leader */
    EVENT_FORK = 7,     /* a process with sockets forked (socket group): pid = the child (for a
                           thread, its tid), size = the parent's tgid. Identity can name a child
                           that exits before its /proc is read by its parent */
    EVENT_CGROUP = 8,   /* cgroup_mkdir in the unified (v2) hierarchy: size = the new cgroup's id
                           (what bpf_get_current_cgroup_id() gives its tasks), payload = its path.
                           Identity maps an exec event's cgroup id to a container or unit with it
                           even when the cgroup is removed before the event is handled */
    EVENT_LISTEN = 9,   /* a TCP socket entered LISTEN (socket group): pid = the listening tgid,
                           local_addr/local_port = where (all-zero address: a wildcard) */
};

enum direction {
    DIR_EGRESS = 0,     /* the process wrote/sent the bytes */
    DIR_INGRESS = 1,    /* the process read/received them */
};

/* Which syscall produced an event (event_hdr.syscall); for debugging and tests. */
enum syscall_op {
    OP_NONE = 0,
    OP_READ = 1,
    OP_WRITE = 2,
    OP_READV = 3,
    OP_WRITEV = 4,
    OP_RECVFROM = 5,
    OP_SENDTO = 6,
    OP_RECVMSG = 7,
    OP_SENDMSG = 8,
    OP_RECVMMSG = 9,
    OP_SENDMMSG = 10,
    OP_SENDFILE = 11,
    OP_SOCKET = 12,
    OP_CONNECT = 13,
    OP_ACCEPT = 14,
    OP_CLOSE = 15,
    OP_BIND = 16,
    OP_DUP = 17,      /* dup, dup2, dup3 */
};

/* event_hdr.flags */
#define EVF_READ_FAULT 1    /* a user-memory copy failed: payload shorter than it should be */
#define EVF_PEER_FROM_CALL 2 /* peer_* came from this syscall's own sockaddr, not the socket map */

/* Index into the "drops" array map. */
enum drop_cause {
    DROP_RINGBUF_FULL = 0,  /* bpf_ringbuf_output failed: consumer too slow or ring too small */
    DROP_INFLIGHT_FULL = 1, /* per-thread syscall-args map full: event for that call lost */
    DROP_READ_FAULT = 2,    /* bpf_probe_read_user failed: event sent with fewer bytes */
    DROP_MMSG_TRUNCATED = 3,/* *mmsg call moved more messages than MAX_MMSG: the rest not sent */
    DROP_H2_UNWALKED = 4,   /* a big call on an HTTP/2 socket whose frame chain could not be
                               followed to its end (block full, step limit, fault): the parser
                               loses sync after the frames it got */
    DROP_CAUSES = 5,
};

/* Index into the "config" array map (u32 values) that Python writes. */
enum config_key {
    CONF_SOCKET_ENABLED = 0, /* 0: socket programs keep their maps but emit nothing */
    CONF_DGRAM_EXIT = 1,     /* the socket path's datagram exits: odd while sock__exit_dgram is
                                attached, bumped at every attach and detach (capture.c) */
    CONF_KEYS = 2,
};

struct event_hdr {
    unsigned long long ts_ns;      /*  0 bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    unsigned long long cgroup_id;  /*  8 bpf_get_current_cgroup_id(); DATA: only in the first
                                         event of a socket entry, 0 after (as comm) */
    unsigned long long size;       /* 16 bytes the syscall really moved (>= captured_len) */
    unsigned int pid;              /* 24 tgid */
    unsigned int tid;              /* 28 */
    int fd;                        /* 32 */
    unsigned int captured_len;     /* 36 payload bytes that follow this header */
    unsigned char kind;            /* 40 enum event_kind */
    unsigned char direction;       /* 41 enum direction */
    unsigned char syscall;         /* 42 enum syscall_op */
    unsigned char flags;           /* 43 EVF_* */
    unsigned short family;         /* 44 AF_INET / AF_INET6 / 0 */
    unsigned short sock_type;      /* 46 SOCK_STREAM / SOCK_DGRAM / 0 */
    unsigned short peer_port;      /* 48 host byte order */
    unsigned short lost;           /* 50 DATA: the socket's sock_info.lost when this was captured */
    unsigned char peer_addr[16];   /* 52 AF_INET: first 4 bytes; AF_INET6: all 16 */
    char comm[16];                 /* 68 the thread's; DATA: only in the first event of a socket
                                         entry (the tracker names a connection once), "" after */
    /* Appended: the socket's own end, when known (bind, accept, inet_sock_set_state). */
    unsigned short local_port;     /* 84 host byte order, 0 when unknown */
    unsigned short tail_len;       /* 86 DATA: payload bytes that are the call's tail (see top) */
    unsigned char local_addr[16];  /* 88 same family as peer; all zero for a wildcard bind */
};                                 /* 104 */

/* What the socket map remembers about one (tgid << 32 | fd). */
struct sock_info {
    unsigned long long gen;        /*  0 proc_gen of the owning tgid when learnt (pid reuse guard) */
    unsigned long long ts;         /*  8 bpf_ktime_get_ns() when the socket was first seen, 0 if
                                         seeded: a forked child inherits only entries older
                                         than its fork */
    unsigned short family;         /* 16 */
    unsigned short sock_type;      /* 18 */
    unsigned short peer_port;      /* 20 host byte order, 0 when unknown */
    unsigned short local_port;     /* 22 host byte order, 0 when unknown */
    unsigned char peer_addr[16];   /* 24 */
    unsigned char local_addr[16];  /* 40 */
    unsigned int id_fd;            /* 56 the fd number events name this socket by: its own, or
                                         for a dup()/dup2() copy the original's, so both ends of
                                         a connection moved to fds 0 and 1 are one stream */
    unsigned short lost;           /* 60 data calls on it not captured (shed, or the ring refused
                                         the record), mod 2^16 as event_hdr.lost: a change between
                                         two of its events tells the parser that calls are
                                         missing in between */
    unsigned char named;           /* 62 1 once an event of this entry reached the ring (a data event,
                                         or its ACCEPT or CONNECT record: capture.c named_at_open):
                                         later ones leave comm and cgroup_id zero (new_data_event) */
    unsigned char h2;              /* 63 H2_* bits: an HTTP/2 connection (its preface went by) */
    unsigned short shed_seen;      /* 64 the socket's shed mark (capture.c: shed_marks) when its last
                                         call was captured on the socket path, or when it was named
                                         at its opening */
    unsigned short h2_lost;        /* 66 `lost` when h2_left was last set: calls lost since (shed, or
                                         refused by the ring) leave it unknown where frames start */
    unsigned int epoch_seen;       /* 68 capture.c's mute_epoch + exit_epoch when this entry was last
                                         found current (its gen its process's) and its key not
                                         muted (0: never): while the sum is the same, no process
                                         exited and no mute came since, and the proc_gen and
                                         muted lookups are skipped */
    unsigned int h2_left[2];       /* 72 per direction: bytes of the frame in progress still to come
                                         before the next frame header (H2_LOST_*: unknown) */
};                                 /* 80 */

/* sock_info.h2 */
#define H2_CONN 1                  /* the connection preface went by: its frames are followed */
#define H2_LOST_EGRESS 2           /* where the next frame starts is unknown in that direction */
#define H2_LOST_INGRESS 4

/* The last few socket fds a process created or accepted (value of the "recent" map, keyed by
 * tgid). Its presence marks a process whose forks are worth following; at fork the entries of
 * these fds are copied into the child's fork link, because accept-then-fork servers close
 * their copy right after forking, often before the child first reads. */
#define RECENT_FDS 4
#define NO_FD 0xffffffffu
struct recent_fds {
    unsigned int fd[RECENT_FDS];   /*  0 NO_FD when empty */
    unsigned int next;             /* 16 slot written next (mod RECENT_FDS) */
    unsigned int _pad0;            /* 20 */
};                                 /* 24 */

#endif /* HOSTAGENT_EVENTS_H */
