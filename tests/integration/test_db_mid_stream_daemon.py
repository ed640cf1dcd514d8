"""Connections whose statements were prepared before the agent started, through the real daemon.

A pool prepares once and then only executes: psycopg 3 with ``prepare=True`` sends Bind/Describe/
Execute/Sync, mysql-connector-python's prepared cursor COM_STMT_RESET + COM_STMT_EXECUTE. Each
client here connects and prepares, then waits; the agent starts (its /proc seeding finds the
sockets); then the client executes. Every execute must be a span on both ends, saying what the
wire says (the operation in PostgreSQL's CommandComplete tag, the rows, the statement's name or
id) and no text, which went by before the agent.

A Redis connection busy reading a 4 MB reply when the agent starts shows it the reply's middle
first: its next commands must still be traced (detection on a stream first seen mid-way). They
are sent in rounds after the GETs stopped, until one came through whole: while the ring is full
(the GETs' copies, or other traffic on a busy host), the kernel sheds every data call (counted).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import db_servers
from tests.support.db_daemon import SETTLE_S, Sides, start_db_agent, stopped_cleanly
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan
from tests.support.ports import free_port

pytestmark = pytest.mark.root

PG_PORT, MY_PORT, REDIS_PORT = free_port(), free_port(), free_port()
EXECUTES = 3

PSYCOPG = """
import sys, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True)
conn.execute("SELECT %s::int AS early", (0,), prepare=True).fetchall()  # Parse: before the agent
print("prepared", flush=True)
sys.stdin.readline()
for i in range(1, int(sys.argv[2]) + 1):
    conn.execute("SELECT %s::int AS early", (i,), prepare=True).fetchall()
conn.close()
"""

CONNECTOR = """
import sys, mysql.connector
conn = mysql.connector.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database="test",
                               use_pure=True, autocommit=True)
cur = conn.cursor(prepared=True)
cur.execute("SELECT ? AS early", (0,)); cur.fetchall()  # COM_STMT_PREPARE: before the agent
print("prepared", flush=True)
sys.stdin.readline()
for i in range(1, int(sys.argv[2]) + 1):
    cur.execute("SELECT ? AS early", (i,)); cur.fetchall()
conn.close()
"""


BIG_READER = """
import select, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def cmd(*a):
    s.sendall(b"*%d\\r\\n" % len(a) + b"".join(b"$%d\\r\\n%s\\r\\n" % (len(x), x) for x in a))
def reply(size):
    got = 0
    while got < size:
        got += len(s.recv(1 << 16))
cmd(b"SET", b"big", b"x" * 4_000_000); reply(5)
print("prepared", flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:  # a 4 MB reply in flight most of the time
    cmd(b"GET", b"big"); reply(len(b"$4000000\\r\\n") + 4_000_000 + 2)
sys.stdin.readline()
print("stopped", flush=True)
for _ in sys.stdin:  # a round of INCRs per line
    for _ in range(int(sys.argv[2])):
        cmd(b"INCR", b"after"); s.recv(100)
    print("done", flush=True)
"""


def _prepared_client(code: str, *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != b"prepared\n":
        proc.kill()
        raise AssertionError(f"client did not prepare: {line!r} {proc.communicate(timeout=10)[1]!r}")
    return proc


def _go(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(b"go\n", timeout=60)
    assert proc.returncode == 0, err.decode(errors="replace")


def _wait_by_port(receiver: OtlpGrpcReceiver, port: int, count: int = EXECUTES) -> Sides:
    """Both ends' spans by the server port they name: a PostgreSQL backend forked before the agent
    started has no ``process.parent_pid`` to find it by (the agent did not see the fork)."""

    def sides(spans: list[ReceivedSpan]) -> Sides:
        mine = sorted((s for s in spans if s.attributes.get("server.port") == port), key=lambda s: s.start_unix_ns)
        return Sides([s for s in mine if s.kind == "CLIENT"], [s for s in mine if s.kind == "SERVER"])

    def enough(spans: list[ReceivedSpan]) -> bool:
        got = sides(spans)
        return len(got.client) >= count and len(got.server) >= count

    with contextlib.suppress(TimeoutError):  # the exact assertions say what was missing
        receiver.recorder.wait_for_spans(enough, 30.0)
    time.sleep(SETTLE_S)
    return sides(receiver.recorder.spans)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[db_servers.RunningServer, db_servers.RunningServer]]:
    with db_servers.postgres_server(PG_PORT) as pg, db_servers.mariadb_server(MY_PORT) as maria:
        yield pg, maria


def test_statements_prepared_before_the_agent_started(
    receiver: OtlpGrpcReceiver,
    servers: tuple[db_servers.RunningServer, db_servers.RunningServer],
    tmp_path: Path,
) -> None:
    pg = servers[0]
    receiver.recorder.clear()
    clients = [_prepared_client(PSYCOPG, pg.dsn, str(EXECUTES))]
    try:
        clients.append(_prepared_client(CONNECTOR, str(MY_PORT), str(EXECUTES)))
        agent = start_db_agent(tmp_path / "agent", receiver)
        try:
            for client in clients:
                _go(client)
            pg_sides = _wait_by_port(receiver, PG_PORT)
            my_sides = _wait_by_port(receiver, MY_PORT)
        finally:
            assert stopped_cleanly(agent) == "nothing"
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    for spans in (pg_sides.client, pg_sides.server):
        assert [(s.name, s.attributes.get("db.operation.name"), s.attributes.get("db.query.text"),
                 s.attributes.get("hostagent.db.statement.name"), s.attributes.get("db.response.returned_rows"),
                 s.attributes.get("db.system.name")) for s in spans] == [
            ("SELECT", "SELECT", None, "_pg3_0", 1, "postgresql")
        ] * EXECUTES  # fmt: skip
    for spans in (my_sides.client, my_sides.server):
        # no greeting seen: MariaDB cannot be told from MySQL (the span says so); no text, so no
        # operation either
        assert [(s.name, s.attributes.get("db.operation.name"), s.attributes.get("db.query.text"),
                 s.attributes.get("hostagent.db.statement.id"), s.attributes.get("db.response.returned_rows"),
                 s.attributes.get("db.system.name"), s.attributes.get("hostagent.db.system.inferred"))
                for s in spans] == [
            ("mysql", None, None, 1, 1, "mysql", True)
        ] * EXECUTES  # fmt: skip


PYMYSQL = """
import sys, pymysql
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database="test", autocommit=True)
cur = conn.cursor()
cur.execute("SELECT %s AS early", (0,)); cur.fetchall()
print("prepared", flush=True)
sys.stdin.readline()
for i in range(1, int(sys.argv[2]) + 1):
    cur.execute("SELECT %s AS plain", (i,)); cur.fetchall()
conn.close()
"""


def _mariadb_cli() -> subprocess.Popen[bytes]:
    """The mariadb client (MariaDB Connector/C: asks for extended column metadata), connected and
    one query answered before the agent starts."""
    proc = subprocess.Popen(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(MY_PORT), "-uroot",
                             "--skip-ssl", "-n", "-B", "test"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"SELECT 0 AS early;\n")
    proc.stdin.flush()
    assert [proc.stdout.readline(), proc.stdout.readline()] == [b"early\n", b"0\n"]
    return proc


def test_mariadb_without_its_greeting_is_mysql_inferred_unless_its_columns_say(
    receiver: OtlpGrpcReceiver,
    servers: tuple[db_servers.RunningServer, db_servers.RunningServer],
    tmp_path: Path,
) -> None:
    """Two connections to MariaDB opened before the agent (a pool's): PyMySQL's traffic has
    nothing only MariaDB sends, so its spans say "mysql", inferred (they said "mysql" with nothing
    to tell it was a guess); the mariadb client's SELECTs carry MariaDB's extended column
    metadata, so its spans say "mariadb", on both ends."""
    receiver.recorder.clear()
    clients = [_mariadb_cli()]
    cli = clients[0]
    try:
        plain = _prepared_client(PYMYSQL, str(MY_PORT), str(EXECUTES))
        clients.append(plain)
        agent = start_db_agent(tmp_path / "agent", receiver)
        try:
            _go(plain)
            _, err = cli.communicate(b"".join(b"SELECT %d AS cli;\n" % i for i in range(1, EXECUTES + 1)), timeout=60)
            assert cli.returncode == 0, err
            got = _wait_by_port(receiver, MY_PORT, 2 * EXECUTES)
        finally:
            assert stopped_cleanly(agent) == "nothing"
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for spans in (got.client, got.server):
        assert sorted((s.attributes.get("db.query.text"), s.attributes.get("db.system.name"),
                       s.attributes.get("hostagent.db.system.inferred")) for s in spans) == sorted(
            [("SELECT ? AS cli", "mariadb", None)] * EXECUTES + [("SELECT ? AS plain", "mysql", True)] * EXECUTES
        )  # fmt: skip


def _stop_gets(client: subprocess.Popen[bytes]) -> None:
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write(b"stop\n")
    client.stdin.flush()
    assert client.stdout.readline() == b"stopped\n"


def _incrs(spans: list[ReceivedSpan], since: int) -> list[tuple[str, str]]:
    return sorted((s.kind, s.name) for s in spans if s.attributes.get("server.port") == REDIS_PORT
                  and s.name == "INCR" and s.start_unix_ns >= since)  # fmt: skip


def _incr_rounds(client: subprocess.Popen[bytes], receiver: OtlpGrpcReceiver, rounds: int = 6) -> list[tuple[str, str]]:
    """The INCR spans of the first round of EXECUTES INCRs on the connection that came through
    whole, else of the last round. The GETs' reads (61 per 4 MB reply, 16 KB copied of each, on
    both ends), or any other process's traffic on a busy host, can fill the ring faster than a
    loaded machine drains it: the kernel then sheds every data call (counted as
    kernel_ringbuf_full drops), and a round sent meanwhile is lost with them, which says nothing
    about detection. A connection that detection gave up on (muted) gets no round through."""
    assert client.stdin is not None and client.stdout is not None
    got: list[tuple[str, str]] = []
    for _ in range(rounds):
        since = time.time_ns()
        client.stdin.write(b"go\n")
        client.stdin.flush()
        assert client.stdout.readline() == b"done\n"
        with contextlib.suppress(TimeoutError):
            receiver.recorder.wait_for_spans(lambda spans, t=since: len(_incrs(spans, t)) >= 2 * EXECUTES, 10.0)
        time.sleep(SETTLE_S)
        got = _incrs(receiver.recorder.spans, since)
        if got == [("CLIENT", "INCR")] * EXECUTES + [("SERVER", "INCR")] * EXECUTES:
            break
    return got


def test_a_connection_first_seen_in_the_middle_of_a_big_reply(receiver: OtlpGrpcReceiver, tmp_path: Path) -> None:
    receiver.recorder.clear()
    with db_servers.redis_server(REDIS_PORT):
        client = _prepared_client(BIG_READER, str(REDIS_PORT), str(EXECUTES))
        try:
            agent = start_db_agent(tmp_path / "agent", receiver)
            try:
                time.sleep(1.0)  # GETs of the 4 MB value go on while the agent watches
                _stop_gets(client)
                incrs = _incr_rounds(client, receiver)
                _, err = client.communicate(timeout=60)  # stdin closed: the client ends
                assert client.returncode == 0, err.decode(errors="replace")
            finally:
                stopped_cleanly(agent)  # the GETs' reads (61 per reply) may fill the ring: counted drops
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
    assert incrs == [("CLIENT", "INCR")] * EXECUTES + [("SERVER", "INCR")] * EXECUTES
    gets = [s for s in receiver.recorder.spans if s.name == "GET" and s.kind == "CLIENT"]
    assert gets and all(s.attributes.get("db.response.status_code") is None for s in gets)
