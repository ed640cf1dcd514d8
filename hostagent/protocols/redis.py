"""Redis (RESP2 and RESP3) commands and replies -> Calls, one per command.

One ``RedisParser`` per connection: the side that writes commands (arrays of bulk strings, or
inline lines) is the client; EGRESS commands -> Role.CLIENT, INGRESS -> Role.SERVER. Replies
pair with commands first-in first-out, which covers pipelines (a hundred commands in one write)
and MULTI/EXEC (each queued command gets its ``+QUEUED``, EXEC gets the array of results).
Values never leave this module: a Call has the command name (with the subcommand for container
commands such as ``CLIENT SETNAME``) and ``db.query.text`` with every argument replaced by ``?``;
``request_body`` is always empty, so an AUTH password appears nowhere. Error replies (``-ERR``,
``-WRONGTYPE``, ``!`` blob errors) give ``db.response.status_code`` = their prefix; the message
is kept with quoted parts replaced by ``?`` (Redis quotes the arguments it complains about, as they
came: ``scrub_error``).

Not replies: RESP3 pushes (``>``) and, in RESP2 subscribed mode, ``message``/``pmessage``/
``smessage`` arrays; (P|S)(UN)SUBSCRIBE take one confirmation per channel (an argument-less
UNSUBSCRIBE ends at the confirmation whose count is 0). After MONITOR every line is a feed.
When a hole in the capture hides framing, pairing is made honest rather than complete: see
``_broken_requests`` / ``_broken_replies``, and ``_lost_in_bulk`` / ``_lost_in_command`` for a hole
nobody reported.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Optional

from hostagent.model import Call, Direction, Role, Segment
from hostagent.protocols.base import ParserStats, ProtocolSpec, RoleGuess
from hostagent.protocols.resp import INLINE, REPLY_START, Broken, RespReader, Value, whole_commands, whole_replies

SYSTEM = "redis"
MAX_PENDING = 4096

# Redis 7's commands: they tell a command from a reply that is also an array of bulk strings when
# a connection's roles are guessed (``_command_name``). Detection goes by the RESP shape, so a
# connection may start with a command no list has (module commands, newer ones).
COMMANDS = frozenset("""
append auth bgrewriteaof bgsave bitcount bitfield bitfield_ro bitop bitpos blmove blmpop blpop
brpop brpoplpush bzmpop bzpopmax bzpopmin client cluster command config copy dbsize debug decr
decrby del discard dump echo eval eval_ro evalsha evalsha_ro exec exists expire expireat
expiretime failover fcall fcall_ro flushall flushdb function geoadd geodist geohash geopos
georadius georadiusbymember geosearch geosearchstore get getbit getdel getex getrange getset
hdel hello hexists hget hgetall hincrby hincrbyfloat hkeys hlen hmget hmset hrandfield hscan
hset hsetnx hstrlen hvals incr incrby incrbyfloat info keys lastsave latency lcs lindex linsert
llen lmove lmpop lolwut lpop lpos lpush lpushx lrange lrem lset ltrim memory mget migrate
module monitor move mset msetnx multi object persist pexpire pexpireat pexpiretime pfadd
pfcount pfmerge ping psetex psubscribe pttl publish pubsub punsubscribe quit randomkey
readonly readwrite rename renamenx replicaof reset restore role rpop rpoplpush rpush rpushx
sadd save scan scard script sdiff sdiffstore select set setbit setex setnx setrange shutdown
sinter sintercard sinterstore sismember slaveof slowlog smembers smismember smove sort sort_ro
spop spublish srandmember srem sscan ssubscribe strlen subscribe substr sunion sunionstore
sunsubscribe swapdb sync time touch ttl type unlink unsubscribe unwatch wait waitaof watch
xack xadd xautoclaim xclaim xdel xgroup xinfo xlen xpending xrange xread xreadgroup xrevrange
xsetid xtrim zadd zcard zcount zdiff zdiffstore zincrby zinter zintercard zinterstore
zlexcount zmpop zmscore zpopmax zpopmin zrandmember zrange zrangebylex zrangebyscore
zrangestore zrank zrem zremrangebylex zremrangebyrank zremrangebyscore zrevrange
zrevrangebylex zrevrangebyscore zrevrank zscan zscore zunion zunionstore
""".split())
CONTAINERS = frozenset(
    "acl client cluster command config debug function latency memory module object pubsub script "
    "slowlog xgroup xinfo".split()
)
INLINE_COMMANDS = frozenset("ping echo info get set del exists incr keys dbsize select auth hello "
                            "monitor subscribe flushall flushdb config client command quit".split())
SUBSCRIBES = frozenset({b"subscribe", b"psubscribe", b"ssubscribe", b"unsubscribe", b"punsubscribe",
                        b"sunsubscribe"})  # fmt: skip
MESSAGES = frozenset({b"message", b"pmessage", b"smessage"})
MAX_ARGS = (1 << 31) - 1  # Redis refuses a multibulk count above INT_MAX
MAX_BULK = 512 * 1024 * 1024  # proto-max-bulk-len's default
# Redis quotes what it refuses as it came, quotes inside included ('it's'), so SQL's rule (a
# doubled '' is a quote inside; a quote before a letter is an apostrophe, which would keep 'it's'
# whole) does not fit: a quoted part starts at a quote that follows no letter (not "Can't") and ends
# at the first quote followed by a space, punctuation or the end; cut short by the capture, at the end.
_QUOTED = re.compile(r"""(?<![\w'])'(?:.*?'(?=[\s,.:;)\]"]|\Z)|.*\Z)""", re.DOTALL)
# "unknown command '<name>', with args beginning with: '<arg>' '<arg>' ": all the client's, and an
# argument may hold "' " itself, so the whole tail goes.
_UNKNOWN = re.compile(r"unknown command '.*\Z", re.DOTALL)
_ARGS = ", with args beginning with: "
_PREFIX = re.compile(r"[A-Z][A-Z_]*\Z")
# A container's subcommand as Redis names it: CLIENT NO-EVICT, CLUSTER COUNT-FAILURE-REPORTS, and
# redis-py's CLIENT MAINT_NOTIFICATIONS hold '-' and '_'
_SUBCOMMAND = re.compile(rb"[A-Za-z0-9][A-Za-z0-9_-]{0,31}\Z")


def looks_like(data: bytes, direction: Direction) -> bool:
    """Commands in RESP (``*N\\r\\n$L\\r\\n<name>\\r\\n...``, any command name: ACL, JSON.GET,
    FT.SEARCH, *_RO variants and module commands are not in any list), or a known inline command.

    The array is checked strictly (``_command_arrays``); an inline line is bare words, which many
    text protocols also are, so only the list tells it from them."""
    if data[:1] == b"*":
        return _command_arrays(data)
    line = data[:256].split(b"\n", 1)
    if len(line) < 2 or b" HTTP/" in line[0]:
        return False
    words = line[0].rstrip(b"\r").split()
    return bool(words) and words[0].decode("latin-1").lower() in INLINE_COMMANDS


_CUT = -2  # _header: the bytes end inside the header


def _header(data: bytes, pos: int, marker: int) -> tuple[int, int]:
    """``<marker><digits>\\r\\n`` at ``pos``: (value, position after it); (-1, pos) when it is
    something else, (_CUT, pos) when the captured bytes end inside it."""
    if data[pos] != marker:
        return -1, pos
    end = data.find(b"\r\n", pos + 1, pos + 13)
    digits = data[pos + 1 : end if end >= 0 else pos + 13]
    if end < 0:
        cut = len(data) < pos + 13 and (not digits or digits.rstrip(b"\r").isdigit())
        return (_CUT if cut else -1), pos
    if not digits.isdigit():
        return -1, pos
    return int(digits), end + 2


def _command_arrays(data: bytes) -> bool:
    """Whether ``data`` is one or more (a pipeline) arrays of bulk strings, each bulk string's
    length matching the CRLF after it and each array starting with a name-like word; bytes cut
    by the capture end the check once a command name has been seen whole."""
    pos = 0
    n = len(data)
    named = False
    while pos < n:
        count, pos = _header(data, pos, 0x2A)  # '*'
        if count == _CUT:
            return named
        if not 1 <= count <= MAX_ARGS:
            return False
        for i in range(count):
            if pos >= n:
                return named
            size, pos = _header(data, pos, 0x24)  # '$'
            if size == _CUT:
                return named
            if not 0 <= size <= MAX_BULK:
                return False
            end = pos + size
            if end + 2 > n:
                return named and data[end : end + 2] == b"\r\n"[: max(0, n - end)]
            if data[end : end + 2] != b"\r\n" or (i == 0 and not _name_like(data[pos:end])):
                return False
            named = True
            pos = end + 2
    return named


def _name_like(word: bytes) -> bool:
    """A command name: a letter, then letters, digits and ``._-|:`` (``JSON.GET``, ``FT._LIST``)."""
    return 0 < len(word) <= 64 and word[:1].isalpha() and word.translate(None, b"._-|:").isalnum()


class _Command:
    __slots__ = ("args", "gap", "name", "op", "remaining", "size", "start_ns", "sub_kind", "word1")

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.name = ""  # lowercased command name
        self.op = ""  # db.operation.name: upper case (Redis' own spelling), with a container's subcommand
        self.args = 0  # arguments after ``op``
        self.size = 0
        self.gap = False  # stands for commands lost in a capture hole
        self.sub_kind: Optional[bytes] = None  # (un)subscribe confirmation kind it waits for
        self.remaining = 0  # confirmations still expected (-1: until the count reaches 0)
        self.word1: Optional[str] = None  # SELECT's database index


class RedisParser:
    """Per-connection Redis decoder."""

    def __init__(self) -> None:
        self.stats = ParserStats()
        # Redis has no in-band TLS switch: set with ``rejected`` only, when the connection proves
        # not to be Redis (``_not_redis``), so that the capture stage mutes it
        self.upgraded = False
        self.rejected = False
        self._roles = RoleGuess(_guess_client_dir, self.stats)
        self._req = RespReader(requests=True)
        self._rep = RespReader(requests=False)
        self._pending: deque[_Command] = deque()
        self._subscribed = False
        self._monitor = False
        self._database: Optional[str] = None
        self._answered = False  # a reply to a command seen here has begun: RESP, checked once
        self._foreign = False  # answered in something else than RESP: not Redis (see _consume)
        self._last_reply_ns = 0  # when reply bytes were last seen (_lost_in_bulk)
        # A reply came that no finished command waited for while a command was still being read:
        # the server had read it whole, so its bytes the reader still waits for were lost
        # (_lost_in_command)
        self._answered_unread = False
        self._out: list[Call] = []

    # -- StreamParser ------------------------------------------------------------------------------
    def feed(self, segment: Segment) -> list[Call]:
        try:
            for seg in self._roles.ready(segment):
                self._consume(seg)
        except Exception:  # a parser bug must never take the pipeline down
            self.stats.resyncs += 1
            self._pending.clear()
            self._req = RespReader(requests=True)
            self._rep = RespReader(requests=False)
        return self._take()

    def _take(self) -> list[Call]:
        out, self._out = self._out, []
        return out

    def close(self, ts_ns: int) -> list[Call]:
        self.stats.unpaired += sum(1 for c in self._pending if not c.gap)
        self._pending.clear()
        return []

    def lost(self) -> list[Call]:
        """Calls of this connection were lost in the kernel before the next bytes: commands
        waiting may have lost their replies (dropped, counted as unpaired, as at close), so that
        no later reply is paired with the wrong command; both readers start over and resync at
        the next value they recognise."""
        self.close(0)
        self._req = RespReader(requests=True)
        self._rep = RespReader(requests=False)
        self._answered_unread = False
        return self._take()

    @property
    def role(self) -> Role:
        return self._roles.role

    def _consume(self, seg: Segment) -> None:
        requests = seg.direction == self._roles.client
        if not requests and not self._answered and self._pending and seg.data:
            if seg.data[0] not in REPLY_START:
                self._not_redis()
            self._answered = True
        if self._foreign:
            return
        if not requests:
            if self._rep.in_bulk and self._lost_in_bulk(seg):
                self._realign()
            self._last_reply_ns = seg.ts_ns
        elif self._answered_unread and self._lost_in_command(seg):
            self._realign_requests()
        reader = self._req if requests else self._rep
        for item in reader.feed(seg.data, seg.size, seg.ts_ns):
            if isinstance(item, Broken):
                self.stats.resyncs += 1
                if requests:
                    self._broken_requests(item)
                else:
                    self._broken_replies(item)
            elif requests:
                self._command(item)
            else:
                self._reply(item)
            if item is not None and getattr(item, "truncated", False):
                self.stats.truncated += 1

    def _not_redis(self) -> None:
        """The first reply to a command seen here is not RESP: the inline lines that detection
        took for Redis commands were another text protocol's (memcached's ``get``/``set``, a line
        sent to an HTTP server, which answers ``HTTP/1.1 400``). Nothing of the connection becomes
        a span, and the capture stage mutes it as of no known protocol (``rejected``). Only a
        reply's first byte is judged, and only when a command seen here waits for it: a
        connection picked up mid-way may first show the rest of an earlier reply."""
        self._foreign = True
        self._pending.clear()
        self.stats.extra["not_redis"] = 1
        self.rejected = self.upgraded = True

    # -- commands ----------------------------------------------------------------------------------
    def _command(self, v: Value) -> None:
        words = v.words
        first = words[0] if words else None
        if not isinstance(first, bytes) or not first:
            self.stats.resyncs += 1
            return
        if v.kind == INLINE and not _command_name(first):
            # the bytes of a value read as a line (its command's head lost): no command of that name
            self.stats.resyncs += 1
            return
        self._answered_unread = False
        cmd = _Command(v.start_ns)
        cmd.size = v.size
        name = first.decode("latin-1")
        cmd.name = name.lower()
        argc = v.count - 1
        sub = words[1] if len(words) > 1 else None
        if cmd.name in CONTAINERS and isinstance(sub, bytes) and _SUBCOMMAND.match(sub):
            cmd.op = f"{name} {sub.decode('latin-1')}".upper()
            argc -= 1
        else:
            cmd.op = name.upper() if len(name) <= 64 and name.isprintable() else name[:64].encode().hex()
        cmd.args = max(argc, 0)
        key = cmd.name.encode()
        if key in SUBSCRIBES:
            cmd.sub_kind = key
            cmd.remaining = cmd.args if cmd.args else (-1 if key.startswith((b"un", b"pun", b"sun")) else 1)
        if cmd.name == "select" and isinstance(sub, bytes) and sub.isdigit():
            cmd.word1 = sub.decode()
        self._pending.append(cmd)
        if len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self.stats.unpaired += 1

    # -- replies -------------------------------------------------------------------------------------
    def _reply(self, v: Value) -> None:
        pending = self._pending
        if self._monitor:
            self.stats.extra["monitor_lines"] = self.stats.extra.get("monitor_lines", 0) + 1
            return
        kind_word = v.words[0] if v.words and isinstance(v.words[0], bytes) else None
        kind_lower = kind_word.lower() if kind_word is not None else None
        head = pending[0] if pending else None
        # a confirmation of (un)subscribe, in an array (RESP2) or a push (RESP3)
        if v.kind in (0x2A, 0x3E) and kind_lower in SUBSCRIBES:
            if head is not None and head.sub_kind == kind_lower:
                self._confirmation(head, v)
                return
            if v.kind == 0x3E or self._subscribed:
                self._push()
                return
        if v.kind == 0x3E or (self._subscribed and v.kind == 0x2A and kind_lower in MESSAGES):
            self._push()
            return
        while pending and pending[0].gap:
            if len(pending) > 1 and v.start_ns >= pending[1].start_ns:
                pending.popleft()  # the lost commands' replies are behind us
                continue
            self.stats.unpaired += 1  # a reply to a command lost in a hole
            return
        if not pending:
            self.stats.unpaired += 1
            self._answered_unread = not self._req.idle
            return
        cmd = pending.popleft()
        if cmd.name == "monitor" and v.kind == 0x2B:
            self._monitor = True
        self._emit(cmd, v, v.end_ns)
        if cmd.name == "select" and v.kind == 0x2B and cmd.word1 is not None:
            self._database = cmd.word1  # for the commands after it

    def _confirmation(self, head: _Command, v: Value) -> None:
        count = v.words[2] if len(v.words) > 2 else None
        if isinstance(count, int):
            self._subscribed = count > 0
        if head.remaining > 0:
            head.remaining -= 1
        done = head.remaining == 0 or (head.remaining == -1 and count == 0)
        if done:
            self._pending.popleft()
            self._emit(head, v, v.end_ns)

    def _push(self) -> None:
        self.stats.extra["pushes"] = self.stats.extra.get("pushes", 0) + 1

    # -- lost framing ----------------------------------------------------------------------------
    def _lost_in_bulk(self, seg: Segment) -> bool:
        """Whether bytes of the bulk string being read were lost without the capture stage being
        told (``lost()``): not every loss in the kernel is reported (bpf/capture.c says which are
        not), and inside a bulk string the reader would count every later reply towards the
        bytes it still waits for, so that the connection made no span again (a 4 MB GET's reply
        picked up mid-way, then INCRs). Said by the two directions together: the client wrote a
        command after the last reply bytes came (a client that writes while a reply is still
        coming pipelines, and wrote before its first bytes), and this segment, whole, is nothing
        but complete replies."""
        pending = self._pending
        return (
            len(pending) > 1
            and pending[-1].start_ns > self._last_reply_ns
            and seg.size == len(seg.data)
            and whole_replies(seg.data)
        )

    def _realign(self) -> None:
        """Read replies afresh from this segment (``_lost_in_bulk``). The commands written before
        the last reply bytes came (the one in flight, at least) may have had their replies in what
        was lost: dropped, counted as unpaired, never paired with a later reply; the segment's
        replies answer the commands written since."""
        self.stats.resyncs += 1
        pending = self._pending
        while pending and pending[0].start_ns <= self._last_reply_ns:
            if not pending.popleft().gap:
                self.stats.unpaired += 1
        self._rep.restart()

    def _lost_in_command(self, seg: Segment) -> bool:
        """Whether bytes of the command being read were lost without the capture stage being told:
        inside a big command (a SET of a 1 MB value, written in pieces) the reader would take every
        later command for the rest of its bulk string, so that the connection made no span again.
        Said by the two directions together: a reply came that no finished command waited for
        while this one was being read (the server answers a command only once it has read it
        whole), and this segment, whole, is nothing but complete commands."""
        return seg.size == len(seg.data) and whole_commands(seg.data)

    def _realign_requests(self) -> None:
        """Read commands afresh from this segment (``_lost_in_command``). The command cut by the
        loss makes no span: its reply went by unpaired (counted) when it came."""
        self.stats.resyncs += 1
        self._answered_unread = False
        self._req.restart()

    def _broken_requests(self, b: Broken) -> None:
        """Commands were lost: a gap stands for them until their replies have gone by."""
        if self._pending and self._pending[-1].gap:
            return
        gap = _Command(b.ts_ns)
        gap.gap = True
        self._pending.append(gap)
        self.stats.unpaired += 1

    def _broken_replies(self, b: Broken) -> None:
        """Replies were lost: the reply in flight ends the oldest command; the other commands sent
        before the loss cannot be paired any more and are dropped (counted), never mis-paired."""
        pending = self._pending
        if b.in_flight and pending and not pending[0].gap:
            self._emit(pending.popleft(), None, b.ts_ns)
        while pending and pending[0].start_ns <= b.ts_ns:
            if not pending.popleft().gap:
                self.stats.unpaired += 1

    # -- Calls -----------------------------------------------------------------------------------
    def _emit(self, cmd: _Command, reply: Optional[Value], end_ns: int) -> None:
        attrs: dict[str, object] = {
            "db.system.name": SYSTEM,
            "db.operation.name": cmd.op,
            "db.query.text": cmd.op + " ?" * cmd.args,
        }
        if self._database is not None:
            attrs["db.namespace"] = self._database
        error_type = None
        message = ""
        failed = _error_text(cmd, reply)
        if failed is not None:
            text = failed.decode("utf-8", "replace")
            prefix = text.split(" ", 1)[0]
            error_type = prefix if _PREFIX.match(prefix) else "ERR"
            message = scrub_error(text)
            attrs["db.response.status_code"] = error_type
        # Positional, in Call's field order: keywords cost ~0.6 us more per Call (model.Call)
        self._out.append(Call(
            SYSTEM, self.role, cmd.start_ns, max(end_ns, cmd.start_ns),  # protocol, role, start_ns, end_ns
            cmd.op, attrs,  # type: ignore[arg-type]  # name, attributes
            error_type, message[:256],  # error_type, status_message
            None, None, (), (), b"", b"",  # traceparent, tracestate, headers and bodies: none
            cmd.size, reply.size if reply is not None else 0,  # request_size, response_size
        ))  # fmt: skip


def _error_text(cmd: _Command, reply: Optional[Value]) -> Optional[bytes]:
    """The error a command's reply carries: an error reply, or the first error among EXEC's
    results (a queued command that failed when run, which the client raises for the transaction;
    its own +QUEUED span cannot say so)."""
    if reply is None:
        return None
    if reply.kind in (0x2D, 0x21):  # '-' simple error, '!' blob error
        return reply.text or b""
    if cmd.name == "exec":
        return reply.error
    return None


def scrub_error(text: str) -> str:
    """An error reply's message with what it quotes of the command (values, names) as ``'?'``."""
    unknown = _UNKNOWN.search(text)
    if unknown is None:
        return _QUOTED.sub("'?'", text)
    tail = unknown.group(0)
    args = "" if _ARGS not in tail else _ARGS if tail.endswith(_ARGS) else _ARGS + "'?' "
    return text[: unknown.start()] + "unknown command '?'" + args


def _guess_client_dir(data: bytes, direction: Direction) -> Optional[Direction]:
    """Commands are arrays of bulk strings starting with a command name, or inline lines."""
    other = Direction.INGRESS if direction == Direction.EGRESS else Direction.EGRESS
    if not data:
        return None
    if data[:1] == b"*":
        parts = data[:64].split(b"\r\n", 3)
        if len(parts) < 4:
            return None if len(data) < 64 else other  # the first element is not complete yet
        return direction if _command_name(parts[2]) and _command_arrays(data) else other
    if data[0] in REPLY_START:
        return other
    if b"\n" not in data[:256]:
        return None
    return direction if looks_like(data, direction) else None


def _command_name(word: bytes) -> bool:
    """A reply can be an array of bulk strings too: its first word tells a command from one.
    Known commands and containers, module commands (``JSON.GET``), read-only variants (``*_RO``),
    and names written the way clients send the ones no list has (upper case, ``FOO``)."""
    if not _name_like(word):
        return False
    name = word.decode("latin-1").lower()
    return name in COMMANDS or name in CONTAINERS or b"." in word or name.endswith("_ro") or word.isupper()


def new_parser() -> RedisParser:
    return RedisParser()


SPEC = ProtocolSpec(name=SYSTEM, probe="redis", looks_like=looks_like, new_parser=new_parser)
