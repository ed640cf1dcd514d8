"""Redis parser over bytes recorded from a real Redis 7.0 with redis-cli, redis-py and a raw
RESP3 socket client (attributes, big numbers: neither hiredis nor redis-py can read them).

Recordings: tests/fixtures/db/redis_*.json (tests/support/record_db_fixtures.py).
"""

from __future__ import annotations

from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostagent.capture.tracker import ConnectionTracker
from hostagent.model import Direction, Role, Segment
from hostagent.protocols import redis, resp
from hostagent.protocols.redis import RedisParser, looks_like
from hostagent.protocols.registry import PROTOCOLS
from tests.support.db_fixtures import chunks, cut_at, run, segments, summary, tracked

Names = list[tuple[str, Optional[str]]]  # span name, error type
SETINFO: Names = [("CLIENT SETINFO", "ERR")] * 2  # redis-py 8 announces itself; Redis 7.0 refuses
DEBUG7: Names = [("DEBUG PROTOCOL", None)] * 7

CASES: dict[str, Names] = {
    # redis-cli asks for COMMAND DOCS first (a 100 KB+ reply), then one command per line
    "redis_cli": [("COMMAND DOCS", None), ("SET", None), ("GET", None), ("INCR", None), ("DEL", None),
                  ("PING", None)],
    # MULTI + 3 queued (+QUEUED each) + EXEC in one write; WRONGTYPE; unknown command
    "redis_py_multi": [*SETINFO, ("MULTI", None), ("INCRBY", None), ("LPUSH", None), ("GET", None),
                       ("EXEC", None), ("LPUSH", "WRONGTYPE"), ("NOSUCHCMD", "ERR")],
    "redis_py_auth": [("AUTH", None), *SETINFO, ("SET", None), ("GET", None)],
    # two subscribe confirmations end one SUBSCRIBE; 2 messages are pushes; PING in subscribed
    # mode answers ["pong", ""]; UNSUBSCRIBE (no args) ends at the confirmation with count 0
    "redis_py_pubsub": [*SETINFO, ("SUBSCRIBE", None), ("PING", None), ("UNSUBSCRIBE", None)],
    # RESP3: map (HELLO, HGETALL, DEBUG PROTOCOL map), set, double, boolean, null, verbatim,
    # a push before the reply to DEBUG PROTOCOL push
    "redis_cli_resp3": [("HELLO", None), ("COMMAND DOCS", None), ("HSET", None), ("HGETALL", None),
                        ("SADD", None), ("SMEMBERS", None), ("ZADD", None), ("ZSCORE", None), *DEBUG7],
    # |1 attribute then the real reply; (big number
    "redis_raw_attrib": [("HELLO", None), ("DEBUG PROTOCOL", None), ("DEBUG PROTOCOL", None),
                         ("PING", None)],
    "redis_py_pipeline100": [*SETINFO] + [("SET", None), ("GET", None)] * 50,
    # redis-cli with commands typed in lower case: the names are Redis' own (upper case)
    "redis_cli_lowercase": [("COMMAND DOCS", None), ("SET", None), ("GET", None), ("CLIENT SETNAME", None),
                            ("HGETALL", None)],
    # subcommands are named whole, '-' and '_' included (Redis' own names: client|no-evict)
    "redis_cli_hyphen_subcommands": [("COMMAND DOCS", None), ("CLIENT NO-EVICT", None), ("CLIENT NO-EVICT", None),
                                     ("CLUSTER COUNT-FAILURE-REPORTS", "ERR"), ("PING", None)],
    # EXEC's results holding an error fail EXEC with it (the queued LPUSH ran into WRONGTYPE);
    # a refused queued command aborts EXEC (EXECABORT); a clean transaction
    "redis_cli_exec_errors": [("COMMAND DOCS", None), ("MULTI", None), ("SET", None), ("LPUSH", None), ("INCR", None),
                              ("EXEC", "WRONGTYPE"), ("MULTI", None), ("SET", None), ("NOSUCH", "ERR"),
                              ("EXEC", "EXECABORT"), ("MULTI", None), ("INCR", None), ("EXEC", None)],
    # redis-py 8.2's handshake: HELLO 3, then three CLIENT subcommands that Redis 7.0 refuses
    "redis_py_handshake": [("HELLO", None), ("CLIENT MAINT_NOTIFICATIONS", "ERR"), *SETINFO, ("PING", None)],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("side", ["client", "server"])
def test_recorded_sessions(name: str, side: str) -> None:
    parser = RedisParser()
    calls = run(parser, segments(name, side))
    assert [(c.name, c.error_type) for c in calls] == CASES[name]
    role = Role.CLIENT if side == "client" else Role.SERVER
    for call in calls:
        assert call.role == role
        assert call.protocol == "redis"
        assert call.attributes["db.system.name"] == "redis"
        assert call.attributes["db.operation.name"] == call.name
        assert call.request_body == b"" and call.response_body == b""
        assert call.error_type == call.attributes.get("db.response.status_code")
        assert call.start_ns <= call.end_ns
    assert parser.stats.resyncs == 0 and parser.stats.unpaired == 0


# redis-cli's first command, COMMAND DOCS: a 100 KB+ reply
BIG_REPLIES = {"redis_cli", "redis_cli_resp3", "redis_cli_hyphen_subcommands", "redis_cli_exec_errors"}


@pytest.mark.parametrize("name", sorted(set(CASES) - BIG_REPLIES))
@pytest.mark.parametrize("mode", ["bytes", "joined"])
def test_split_and_joined_reads_give_the_same_calls(name: str, mode: str) -> None:
    want = [summary(c) for c in run(RedisParser(), segments(name))]
    assert [summary(c) for c in run(RedisParser(), segments(name, mode=mode))] == want


@pytest.mark.parametrize("name", sorted(BIG_REPLIES))
def test_big_replies_joined(name: str) -> None:
    want = [summary(c) for c in run(RedisParser(), segments(name))]
    assert [summary(c) for c in run(RedisParser(), segments(name, mode="joined"))] == want


@pytest.mark.parametrize(
    ("name", "texts"),
    [
        ("redis_cli_hyphen_subcommands", ["CLIENT NO-EVICT ?", "CLIENT NO-EVICT ?", "CLUSTER COUNT-FAILURE-REPORTS ?"]),
        ("redis_py_handshake", ["CLIENT MAINT_NOTIFICATIONS ? ? ?", "CLIENT SETINFO ? ?", "CLIENT SETINFO ? ?"]),
    ],
)  # fmt: skip
def test_subcommand_with_hyphen_or_underscore_is_named(name: str, texts: list[str]) -> None:
    calls = run(RedisParser(), segments(name))
    assert [c.attributes["db.query.text"] for c in calls if c.name.startswith(("CLIENT", "CLUSTER"))] == texts


def test_exec_failing_a_queued_command_says_which_error() -> None:
    """The first error among EXEC's results is EXEC's (what a client raises for the transaction)."""
    calls = [c for c in run(RedisParser(), segments("redis_cli_exec_errors")) if c.name == "EXEC"]
    assert [(c.error_type, c.attributes.get("db.response.status_code"), c.status_message) for c in calls] == [
        ("WRONGTYPE", "WRONGTYPE", "WRONGTYPE Operation against a key holding the wrong kind of value"),
        ("EXECABORT", "EXECABORT", "EXECABORT Transaction discarded because of previous errors."),
        (None, None, ""),
    ]


def test_lower_case_commands_are_named_in_upper_case() -> None:
    calls = run(RedisParser(), segments("redis_cli_lowercase"))
    assert [(c.attributes["db.operation.name"], c.attributes["db.query.text"]) for c in calls[1:]] == [
        ("SET", "SET ? ?"), ("GET", "GET ?"), ("CLIENT SETNAME", "CLIENT SETNAME ?"), ("HGETALL", "HGETALL ?"),
    ]  # fmt: skip


def test_pipeline_of_100_commands_in_order() -> None:
    calls = run(RedisParser(), segments("redis_py_pipeline100", mode="joined"))[2:]
    assert len(calls) == 100
    assert [c.attributes["db.query.text"] for c in calls] == ["SET ? ?", "GET ?"] * 50
    # one write carried all 100 commands, one read all replies: same start, same end
    assert len({c.start_ns for c in calls}) == 1 and len({c.end_ns for c in calls}) == 1


@pytest.mark.parametrize("mode", ["chunks", "bytes", "joined"])
@pytest.mark.parametrize("side", ["client", "server"])
def test_auth_password_is_nowhere(mode: str, side: str) -> None:
    calls = run(RedisParser(), segments("redis_py_auth", side, mode))
    assert calls[0].attributes == {"db.system.name": "redis", "db.operation.name": "AUTH",
                                   "db.query.text": "AUTH ?"}  # fmt: skip
    for call in calls:
        assert "s3cr3t" not in repr(call)


def test_error_messages_lose_quoted_arguments() -> None:
    calls = run(RedisParser(), segments("redis_py_multi"))
    # -ERR unknown command 'NOSUCHCMD', with args beginning with: 'secretarg'
    assert calls[-1].status_message == "ERR unknown command '?', with args beginning with: '?' "
    assert all("secretarg" not in repr(c) for c in calls)
    assert calls[-2].status_message == "WRONGTYPE Operation against a key holding the wrong kind of value"


# Error replies of a real Redis 7 to what the recordings sent (redis_errors, redis_first_commands,
# redis_py_multi): apostrophes inside the quoted arguments ('it's'), around none ("Can't"), a
# quoted part ended by a space, '.', ':' or ','; and one cut by the capture (the reader keeps 256 bytes).
ERRORS = [
    ("ERR wrong number of arguments for 'get' command", "ERR wrong number of arguments for '?' command"),
    ("ERR unknown subcommand 'it's'. Try CONFIG HELP.", "ERR unknown subcommand '?'. Try CONFIG HELP."),
    ("ERR unknown command 'NOSUCHCMD', with args beginning with: 'it's' 's3cret' ",
     "ERR unknown command '?', with args beginning with: '?' "),
    ("ERR Error in ACL SETUSER modifier 'it's': Syntax error", "ERR Error in ACL SETUSER modifier '?': Syntax error"),
    ("ERR value is not an integer or out of range", "ERR value is not an integer or out of range"),
    ("ERR Can't execute 'set': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this "
     "context", "ERR Can't execute '?': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed "
     "in this context"),
    ("ERR unknown command 'JSON.GET', with args beginning with: 'doc' '$' ",
     "ERR unknown command '?', with args beginning with: '?' "),
    ("ERR unknown command 'FT.SEARCH', with args beginning with: 'idx' 'it's' ",
     "ERR unknown command '?', with args beginning with: '?' "),
    ("ERR unknown subcommand 'SETINFO'. Try CLIENT HELP.", "ERR unknown subcommand '?'. Try CLIENT HELP."),
    ("WRONGTYPE Operation against a key holding the wrong kind of value",
     "WRONGTYPE Operation against a key holding the wrong kind of value"),
    ("ERR unknown command 'NOSUCHCMD', with args beginning with: 'secretarg' ",
     "ERR unknown command '?', with args beginning with: '?' "),
    ("ERR unknown subcommand 'a-very-long-secret", "ERR unknown subcommand '?'"),  # cut by the capture
    ("ERR unknown command 'X', with args beginning with: ", "ERR unknown command '?', with args beginning with: "),
]  # fmt: skip


@pytest.mark.parametrize(("message", "scrubbed"), ERRORS)
def test_error_messages_quoting_arguments_with_apostrophes(message: str, scrubbed: str) -> None:
    assert redis.scrub_error(message) == scrubbed


@pytest.mark.parametrize("name", ["redis_errors", "redis_first_commands", "redis_py_multi"])
def test_recorded_error_replies_are_scrubbed(name: str) -> None:
    """Each error reply of the recordings is one of ERRORS, and its Call says it scrubbed."""
    table = dict(ERRORS)
    replies = [data[1:-2].decode() for who, data in chunks(name) if who == "s" and data[:1] == b"-"]
    calls = [c for c in run(RedisParser(), segments(name)) if c.error_type]
    assert [c.status_message for c in calls] == [table[m] for m in replies]
    for secret in ("it's", "s3cret", "secretarg", "doc"):
        assert all(secret not in c.status_message for c in calls)


def test_pushes_are_not_replies() -> None:
    parser = RedisParser()
    run(parser, segments("redis_py_pubsub"))
    assert parser.stats.extra == {"pushes": 2}  # message ch1 hello, message ch2 world


def test_bulk_bigger_than_the_captured_prefix() -> None:
    value = b"v" * 100_000
    cmd = b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n%s\r\n" % (len(value), value)
    get = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n"
    reply = b"$%d\r\n%s\r\n" % (len(value), value)
    parser = RedisParser()
    calls = parser.feed(Segment(Direction.EGRESS, cmd[:256], len(cmd), 1))  # 256 bytes captured
    calls += parser.feed(Segment(Direction.INGRESS, b"+OK\r\n", 5, 2))
    calls += parser.feed(Segment(Direction.EGRESS, get, len(get), 3))
    calls += parser.feed(Segment(Direction.INGRESS, reply[:256], len(reply), 4))
    calls += parser.feed(Segment(Direction.EGRESS, b"*1\r\n$4\r\nPING\r\n", 14, 5))
    calls += parser.feed(Segment(Direction.INGRESS, b"+PONG\r\n", 7, 6))
    assert [(c.name, c.request_size, c.response_size) for c in calls] == [
        ("SET", len(cmd), 5), ("GET", len(get), len(reply)), ("PING", 14, 7)]  # fmt: skip
    assert parser.stats.truncated == 2 and parser.stats.resyncs == 0


def test_hole_hiding_framing_in_a_pipeline_is_counted_not_mispaired() -> None:
    segs = segments("redis_py_pipeline100", mode="joined")
    big = segs[4]  # the write with all 100 commands
    assert big.direction == Direction.EGRESS and len(big.data) > 3000
    cut = Segment(big.direction, big.data[:256], big.size, big.ts_ns)
    after = [Segment(Direction.EGRESS, b"*1\r\n$4\r\nPING\r\n", 14, 10**6),
             Segment(Direction.INGRESS, b"+PONG\r\n", 7, 10**6 + 1)]  # fmt: skip
    # what redis-py wrote, rebuilt independently of the parser: how many commands fit in 256 bytes
    def encode(*args: bytes) -> bytes:
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

    sent = [encode(b"SET", b"key:%d" % i, b"value-%d" % i) if i % 2 == 0 else encode(b"GET", b"key:%d" % (i - 1))
            for i in range(100)]  # fmt: skip
    assert b"".join(sent) == big.data
    whole = sum(1 for i in range(100) if len(b"".join(sent[: i + 1])) <= 256)
    assert whole == 8
    parser = RedisParser()
    calls = run(parser, [*segs[:4], cut, *segs[5:], *after])
    names = [c.name for c in calls]
    # the first 8 commands pair with their replies; the other 92 replies are counted; the PING
    # after the hole still pairs with its own +PONG
    assert names == ["CLIENT SETINFO"] * 2 + ["SET", "GET"] * 4 + ["PING"]
    assert parser.stats.resyncs == 1
    assert parser.stats.unpaired == 1 + 92  # the gap itself, and 92 replies without a command


def test_hole_hiding_framing_in_replies_drops_unpairable_commands() -> None:
    parser = RedisParser()
    two = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"
    parser.feed(Segment(Direction.EGRESS, two, len(two), 1))
    # replies: "$5\r\nhello\r\n" then an array of unknown shape, all but 3 bytes lost
    calls = parser.feed(Segment(Direction.INGRESS, b"*5\r", 500, 2))
    assert [c.name for c in calls] == ["GET"]  # the reply in flight ends the oldest command
    assert parser.stats.unpaired == 1 and parser.stats.resyncs == 1
    calls = parser.feed(Segment(Direction.EGRESS, b"PING\r\n", 6, 3))  # an inline command
    calls += parser.feed(Segment(Direction.INGRESS, b"+PONG\r\n", 7, 4))
    assert [(c.name, c.start_ns, c.end_ns) for c in calls] == [("PING", 3, 4)]


def test_select_sets_namespace_and_monitor_lines_are_not_replies() -> None:
    parser = RedisParser()
    sel = b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"
    parser.feed(Segment(Direction.EGRESS, sel, len(sel), 1))
    (call,) = parser.feed(Segment(Direction.INGRESS, b"+OK\r\n", 5, 2))
    assert "db.namespace" not in call.attributes  # it applies to the commands after it
    parser.feed(Segment(Direction.EGRESS, b"*1\r\n$7\r\nMONITOR\r\n", 17, 3))
    (call,) = parser.feed(Segment(Direction.INGRESS, b"+OK\r\n", 5, 4))
    assert call.attributes["db.namespace"] == "3"
    assert parser.feed(Segment(Direction.INGRESS, b'+1700000000.1 [0 127.0.0.1:1] "get" "k"\r\n', 44, 5)) == []
    assert parser.stats.extra == {"monitor_lines": 1}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"*1\r\n$4\r\nPING\r\n", True),  # array of 1 bulk string: PING
        (b"*3\r\n$3\r\nset\r\n$1\r\nk\r\n$1\r\nv\r\n", True),  # lower case command
        (b"PING\r\n", True),  # inline
        (b"*1\r\n$4\r\nNOPE\r\n", True),  # any command name: the RESP shape tells, not a list
        (b"*1\r\n$5\r\nPING\r\n", False),  # wrong bulk length
        (b"*2\r\n$3\r\nACL\r\n$7\r\nWHOAMI\r\n", False),  # the second length is wrong
        (b"*2\r\n$3\r\nACL\r\n$6\r\nWHO", True),  # the capture cut the second argument
        (b"*2\r\n$3\r\nACL\r\n:1\r\n", False),  # a command's arguments are bulk strings
        (b"*0\r\n", False),  # no command
        (b"*1\r\n$3\r\n\x00\x01\x02\r\n", False),  # not a command name
        (b"* OK [CAPABILITY IMAP4rev1] ready\r\n", False),  # IMAP's greeting
        (b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n", True),  # a pipeline
        (b"*1\r\n$4\r\nPING\r\n+OK\r\n", False),  # a command, then not one
        (b"GET / HTTP/1.1\r\n", False),  # HTTP, not an inline GET
        (b"+OK\r\n", False),  # a reply
        (b"\x00\x00\x00\x08\x04\xd2\x16/", False),  # PostgreSQL SSLRequest
        (b"", False),
    ],
)  # fmt: skip
def test_looks_like(data: bytes, expected: bool) -> None:
    assert looks_like(data, Direction.EGRESS) is expected


FIRST = chunks("redis_first_commands")  # raw socket: ACL WHOAMI, JSON.GET, GEORADIUS_RO, FT.SEARCH, SET, GET
FIRST_SPANS = [("ACL WHOAMI", None), ("JSON.GET", "ERR"), ("GEORADIUS_RO", None), ("FT.SEARCH", "ERR"),
               ("SET", None), ("GET", None)]  # fmt: skip


@pytest.mark.parametrize("first", [0, 2, 4, 6])  # the chunk a connection starts with
@pytest.mark.parametrize("side", ["client", "server"])
def test_connection_starting_with_a_command_no_list_has(first: int, side: str) -> None:
    """ACL, module commands and *_RO variants as a connection's first command (real Redis 7)."""
    assert looks_like(FIRST[first][1], Direction.EGRESS) is True
    calls = tracked("redis_first_commands", first, side)
    assert [(c.name, c.error_type) for c in calls] == FIRST_SPANS[first // 2 :]
    assert {c.role for c in calls} == {Role.CLIENT if side == "client" else Role.SERVER}


@pytest.mark.parametrize(
    ("wire", "kinds"),
    [
        (b"+OK\r\n-ERR x\r\n:5\r\n", ["+", "-", ":"]),  # simple string, error, integer
        (b"$-1\r\n*-1\r\n_\r\n", ["$", "*", "_"]),  # RESP2 nulls, RESP3 null
        (b"%1\r\n+a\r\n*2\r\n:1\r\n:2\r\n", ["%"]),  # map of one entry whose value is an array
        (b"|1\r\n+k\r\n+v\r\n:7\r\n", [":"]),  # a top-level attribute is not a value of its own
        (b"*2\r\n|1\r\n+k\r\n+v\r\n:1\r\n:2\r\n", ["*"]),  # an attribute inside: not an element
        (b"$?\r\n;3\r\nabc\r\n;0\r\n", ["$"]),  # streamed string
        (b"*?\r\n:1\r\n:2\r\n.\r\n", ["*"]),  # streamed aggregate
        (b"=15\r\ntxt:Some string\r\n!5\r\nERR x\r\n(123456789012345678901234567890\r\n",
         ["=", "!", "("]),  # verbatim, blob error, big number
        (b">2\r\n+pubsub\r\n+x\r\n#t\r\n,1.5\r\n~1\r\n:1\r\n", [">", "#", ",", "~"]),
    ],
)  # fmt: skip
def test_resp_reader_types(wire: bytes, kinds: list[str]) -> None:
    for step in (len(wire), 1):  # whole, then byte by byte
        reader = resp.RespReader(requests=False)
        values = []
        for i in range(0, len(wire), step):
            values += reader.feed(wire[i : i + step], len(wire[i : i + step]), i)
        assert [chr(v.kind) for v in values if isinstance(v, resp.Value)] == kinds


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=200), st.integers(0, 300)), max_size=20))
def test_no_input_raises_and_memory_stays_bounded(chunks_: list[tuple[bool, bytes, int]]) -> None:
    parser = RedisParser()
    for i, (egress, data, extra) in enumerate(chunks_):
        direction = Direction.EGRESS if egress else Direction.INGRESS
        parser.feed(Segment(direction, data, len(data) + extra, i))
        for reader in (parser._req, parser._rep):
            assert len(reader._line) <= resp.MAX_LINE
            assert len(reader._stack) <= resp.MAX_DEPTH
        assert len(parser._pending) <= redis.MAX_PENDING
    parser.close(10**9)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"*", b"$", b"%", b"|", b">", b"~", b"?", b"-1", b"3", b"\r\n", b"+a",
                                 b":1", b";2", b".", b"ab", b"PING"]), max_size=60))  # fmt: skip
def test_resp_like_garbage_never_raises(parts: list[bytes]) -> None:
    wire = b"".join(parts)
    parser = RedisParser()
    parser.feed(Segment(Direction.EGRESS, b"*1\r\n$4\r\nPING\r\n", 14, 0))
    parser.feed(Segment(Direction.INGRESS, wire, len(wire), 1))
    parser.feed(Segment(Direction.EGRESS, wire, len(wire), 2))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_real_session_with_random_cuts_gives_the_same_calls(data: st.DataObject) -> None:
    segs = segments("redis_py_multi", mode="joined")
    want = [summary(c) for c in run(RedisParser(), segs)]
    cut = cut_at(segs, lambda seg: list(data.draw(st.sets(st.integers(1, max(1, len(seg.data) - 1)), max_size=4))))
    assert [summary(c) for c in run(RedisParser(), cut)] == want


# Text protocols whose lines Redis' inline detection accepts (``set``, ``get``, ``select`` are
# inline commands), recorded from the real servers: a reply that is not RESP says the connection
# is not Redis, and none of its commands may become a Redis span.
NOT_REDIS = ["notredis_memcached", "notredis_nginx_inline"]


@pytest.mark.parametrize("name", NOT_REDIS)
@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("mode", ["chunks", "bytes", "joined"])
def test_connection_answered_in_no_resp_is_not_redis(name: str, side: str, mode: str) -> None:
    assert looks_like(chunks(name)[0][1], Direction.EGRESS) is True  # what made it a Redis connection
    parser = RedisParser()
    assert run(parser, segments(name, side, mode)) == []
    assert parser.stats.extra == {"not_redis": 1}
    assert parser.stats.unpaired == 0


@pytest.mark.parametrize("name", NOT_REDIS)
@pytest.mark.parametrize("side", ["client", "server"])
def test_not_redis_through_the_capture_stage(name: str, side: str) -> None:
    """Detection included (every protocol enabled): no Call of any protocol comes of them."""
    assert tracked(name, 0, side) == []


@pytest.mark.parametrize("name", NOT_REDIS)
@pytest.mark.parametrize("side", ["client", "server"])
def test_not_redis_is_muted_and_counted_next_to_the_detections(name: str, side: str) -> None:
    """Judged not Redis: the kernel is told to stop copying the socket's bytes (once), and the
    capture stage counts it as rejected Redis and unknown, not as a protocol upgrade, and no
    longer as a Redis connection detected."""
    muted: list[tuple[int, int]] = []
    t = ConnectionTracker(lambda: PROTOCOLS, on_mute=lambda pid, fd: muted.append((pid, fd)))
    assert tracked(name, 0, side, t) == []
    assert muted == [(4242, 7)]
    stats = t.stats()
    assert (stats["detected_redis"], stats["rejected_redis"], stats["unknown"], stats["upgraded"]) == (0, 1, 1, 0)


def test_resp_reply_after_a_first_reply_split_anywhere_is_still_redis() -> None:
    """Only a reply's first byte is judged, once: the rest of a reply cut across reads is no
    evidence (redis_cli's 100 KB COMMAND DOCS reply comes in many reads)."""
    parser = RedisParser()
    calls = run(parser, segments("redis_cli", "server"))
    assert [c.name for c in calls] == [n for n, _ in CASES["redis_cli"]]
    assert "not_redis" not in parser.stats.extra
