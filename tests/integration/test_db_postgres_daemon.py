"""PostgreSQL 15 through the real daemon: real BPF, a real server, psql and psycopg 3, spans at a
real OTLP receiver, each test asserting the exact spans.

The server listens on a free high port, not 5432, and nothing tells the agent it is PostgreSQL: detection is
by content. Setup statements (CREATE DATABASE, tables) go over the server's Unix socket, which the
kernel side does not capture, so every span a test sees comes from the statements it sent.

Sides: every statement gives one CLIENT span in the client's process. The SERVER side runs in
a backend process the postmaster forks after accept(); see test_backend_side_makes_server_spans.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import db_servers
from tests.support.agent import Agent
from tests.support.db_daemon import (
    Sides,
    pid_of_postmaster,
    run,
    run_python,
    start_db_agent,
    stopped_cleanly,
    summary,
    wait_sides,
)
from tests.support.otlp_receiver import OtlpGrpcReceiver
from tests.support.ports import free_port

pytestmark = pytest.mark.root

PORT = free_port()
DB = "shop"
QUERY_KEYS = ("db.operation.name", "db.collection.name", "db.query.text", "db.response.status_code")


@pytest.fixture(scope="module")
def agent(receiver: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = start_db_agent(tmp_path_factory.mktemp("agent-pg"), receiver)
    yield a
    assert stopped_cleanly(a) == "nothing"


@pytest.fixture(scope="module")
def pg(agent: Agent) -> Iterator[db_servers.RunningServer]:
    with db_servers.postgres_server(PORT) as server:
        datadir = str(Path(server.workdir) / "data")
        server.extra["datadir"] = datadir
        local(server, f"CREATE DATABASE {DB}")
        local(
            server,
            "CREATE TABLE users (id int PRIMARY KEY, name text);"
            "CREATE TABLE accounts (id int PRIMARY KEY, balance int);"
            "CREATE TABLE events (id int, kind text);"
            "INSERT INTO accounts VALUES (1, 100), (2, 0)",
            DB,
        )
        yield server


@pytest.fixture(autouse=True)
def _clean(receiver: OtlpGrpcReceiver) -> None:
    receiver.recorder.clear()


def local(server: db_servers.RunningServer, sql: str, db: str = "postgres") -> None:
    """Over the Unix socket in the data directory: not captured (AF_UNIX), so no spans."""
    run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            server.extra["datadir"],
            "-p",
            str(PORT),
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ]
    )


def psql(*commands: str, check: bool = True) -> tuple[int, bytes]:
    args = ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(PORT), "-U", "postgres", "-d", DB]
    for c in commands:
        args += ["-c", c]
    pid, done = run(args, check=check)
    return pid, done.stderr


def postmaster(server: db_servers.RunningServer) -> set[int]:
    pid = pid_of_postmaster(server.extra["datadir"])
    assert pid is not None
    return {pid}


def check_common(sides: Sides, client_pid: int) -> None:
    for s in sides.client:
        a = s.attributes
        assert a["db.system.name"] == "postgresql"
        assert a["db.namespace"] == DB
        assert a["server.address"] == "127.0.0.1" and a["server.port"] == PORT
        assert a["network.peer.address"] == "127.0.0.1" and a["network.peer.port"] == PORT
        assert a["network.transport"] == "tcp"
        assert s.resource["process.pid"] == client_pid
        assert s.scope_name == "hostagent"
        # >= 0, not > 0: statements answered in one read share its kernel timestamp
        assert 0 <= s.end_unix_ns - s.start_unix_ns < 5_000_000_000
    if sides.client:
        assert sides.client[0].end_unix_ns > sides.client[0].start_unix_ns


def test_psql_several_statements_in_one_query(receiver: OtlpGrpcReceiver, pg: db_servers.RunningServer) -> None:
    pid, _ = psql(
        "INSERT INTO users VALUES (1, 'ann'), (2, 'bob'); SELECT name FROM users WHERE id = 1; "
        "UPDATE users SET name = 'bea' WHERE id = 2; SELECT count(*) FROM users; "
        "DELETE FROM users WHERE id > 0"
    )
    sides = wait_sides(receiver, PORT, postmaster(pg), 5, 0)
    assert summary(sides.client, *QUERY_KEYS) == [
        ("INSERT users", "INSERT", "users", "INSERT INTO users VALUES (?, ?), (?, ?)", None),
        ("SELECT users", "SELECT", "users", "SELECT name FROM users WHERE id = ?", None),
        ("UPDATE users", "UPDATE", "users", "UPDATE users SET name = ? WHERE id = ?", None),
        ("SELECT users", "SELECT", "users", "SELECT count(*) FROM users", None),
        ("DELETE users", "DELETE", "users", "DELETE FROM users WHERE id > ?", None),
    ]
    assert [s.attributes.get("db.response.returned_rows") for s in sides.client] == [None, 1, None, 1, None]
    assert all(s.status_code == 0 for s in sides.client)
    check_common(sides, pid)
    # one Query message, five statements: each span ends where the next begins
    ends = [s.end_unix_ns for s in sides.client]
    assert ends == sorted(ends)


def test_failing_statement_is_an_error_span(receiver: OtlpGrpcReceiver, pg: db_servers.RunningServer) -> None:
    pid, err = psql("SELECT 1; SELECT * FROM no_such_table; SELECT 3", check=False)
    assert b"does not exist" in err
    sides = wait_sides(receiver, PORT, postmaster(pg), 2, 0)
    # SELECT 3 never ran: the server skips the rest of a Query after an error, so no span
    assert summary(sides.client, *QUERY_KEYS, "error.type") == [
        ("SELECT", "SELECT", None, "SELECT ?", None, None),
        ("SELECT no_such_table", "SELECT", "no_such_table", "SELECT * FROM no_such_table", "42P01", "42P01"),
    ]
    bad = sides.client[1]
    assert bad.status_code == 2
    assert bad.status_message == 'relation "no_such_table" does not exist'
    check_common(sides, pid)


def test_transaction(receiver: OtlpGrpcReceiver, pg: db_servers.RunningServer) -> None:
    pid, _ = psql(
        "BEGIN",
        "UPDATE accounts SET balance = balance - 10 WHERE id = 1",
        "UPDATE accounts SET balance = balance + 10 WHERE id = 2",
        "COMMIT",
    )
    sides = wait_sides(receiver, PORT, postmaster(pg), 4, 0)
    assert summary(sides.client, *QUERY_KEYS) == [
        ("BEGIN", "BEGIN", None, "BEGIN", None),
        ("UPDATE accounts", "UPDATE", "accounts", "UPDATE accounts SET balance = balance - ? WHERE id = ?", None),
        ("UPDATE accounts", "UPDATE", "accounts", "UPDATE accounts SET balance = balance + ? WHERE id = ?", None),
        ("COMMIT", "COMMIT", None, "COMMIT", None),
    ]
    check_common(sides, pid)


PSYCOPG = """
import sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname=sys.argv[2],
                       prepare_threshold=0, autocommit=True, sslmode="disable")
for i in range(3):  # prepared once (Parse "_pg3_0"), then Bind/Execute by name
    conn.execute("SELECT name FROM users WHERE id = %s", (i,)).fetchall()
with conn.pipeline():
    for i in range(20):
        conn.execute("INSERT INTO events (id, kind) VALUES (%s, %s)", (i, "click"))
    conn.execute("SELECT count(*) FROM events")
try:
    conn.execute("SELECT id FROM missing_table WHERE id = %s", (1,))
except psycopg.errors.UndefinedTable:
    pass
else:
    raise SystemExit("expected UndefinedTable")
conn.close()
"""


def test_psycopg_prepared_statements_and_pipeline(receiver: OtlpGrpcReceiver, pg: db_servers.RunningServer) -> None:
    pid, _ = run_python(PSYCOPG, str(PORT), DB)
    sides = wait_sides(receiver, PORT, postmaster(pg), 25, 0)
    assert summary(sides.client, *QUERY_KEYS) == (
        [("SELECT users", "SELECT", "users", "SELECT name FROM users WHERE id = $1", None)] * 3
        + [("INSERT events", "INSERT", "events", "INSERT INTO events (id, kind) VALUES ($1, $2)", None)] * 20
        + [
            ("SELECT events", "SELECT", "events", "SELECT count(*) FROM events", None),
            ("SELECT missing_table", "SELECT", "missing_table", "SELECT id FROM missing_table WHERE id = $1", "42P01"),
        ]
    )
    assert sides.client[23].attributes["db.response.returned_rows"] == 1
    assert sides.client[-1].status_code == 2 and sides.client[-1].attributes["error.type"] == "42P01"
    check_common(sides, pid)


PSYCOPG_COPY_CALL = """
import sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname=sys.argv[2],
                       autocommit=True, sslmode="disable")
cur = conn.cursor()
with cur.copy("COPY events (id, kind) FROM STDIN") as cp:
    for i in range(5):
        cp.write_row((100 + i, "copied"))
with cur.copy("COPY (SELECT id FROM events WHERE kind = 'copied') TO STDOUT") as cp:
    assert sum(1 for _ in cp.rows()) == 5
assert len(conn.execute("CALL add_to(%s, %s)", (1, 5)).fetchall()) == 1  # INOUT total: one row
conn.close()
"""


def test_copy_both_ways_and_call(receiver: OtlpGrpcReceiver, pg: db_servers.RunningServer) -> None:
    """COPY FROM STDIN ends at its CommandComplete (no rows returned: they were written); COPY TO
    STDOUT returns the rows its tag counts; CALL names its stored procedure. Both ends alike."""
    local(pg, "CREATE OR REPLACE PROCEDURE add_to(id int, INOUT total int) LANGUAGE plpgsql AS "
              "$$ BEGIN SELECT balance + total INTO total FROM accounts WHERE accounts.id = add_to.id; END $$",
          DB)  # fmt: skip
    pid, _ = run_python(PSYCOPG_COPY_CALL, str(PORT), DB)
    sides = wait_sides(receiver, PORT, postmaster(pg), 3, 3)
    keys = (*QUERY_KEYS, "db.stored_procedure.name", "db.response.returned_rows")
    for spans in (sides.client, sides.server):
        assert summary(spans, *keys) == [
            ("COPY events", "COPY", "events", "COPY events (id, kind) FROM STDIN", None, None, None),
            ("COPY", "COPY", None, "COPY (SELECT id FROM events WHERE kind = ?) TO STDOUT", None, None, 5),
            ("CALL add_to", "CALL", None, "CALL add_to($1, $2)", None, "add_to", 1),
        ]
    check_common(sides, pid)


def test_backend_side_makes_server_spans(receiver: OtlpGrpcReceiver, pg: db_servers.RunningServer) -> None:
    """The server is on this host: each statement is also a SERVER span, in the backend process."""
    psql("SELECT 1", "SELECT name FROM users WHERE id = 7")
    sides = wait_sides(receiver, PORT, postmaster(pg), 2, 2, timeout=8.0)
    assert summary(sides.server, *QUERY_KEYS) == [
        ("SELECT", "SELECT", None, "SELECT ?", None),
        ("SELECT users", "SELECT", "users", "SELECT name FROM users WHERE id = ?", None),
    ]
    assert all(s.resource["process.parent_pid"] in postmaster(pg) for s in sides.server)
    assert len(sides.client) == 2


def test_raw_sql_after_reload(receiver: OtlpGrpcReceiver, agent: Agent, pg: db_servers.RunningServer) -> None:
    """[capture] raw_sql = true (applied by SIGHUP) keeps the literals in db.query.text. Last in the
    module: it changes the shared agent's config (and puts it back)."""
    original = agent.config.read_text()
    agent.config.write_text(original + "\n[capture]\nraw_sql = true\n")
    try:
        agent.reload()
        pid, _ = psql("SELECT name FROM users WHERE id = 42 AND name <> 'x'")
        sides = wait_sides(receiver, PORT, postmaster(pg), 1, 0)
        assert summary(sides.client, "db.query.text") == [
            ("SELECT users", "SELECT name FROM users WHERE id = 42 AND name <> 'x'")
        ]
        check_common(sides, pid)
    finally:
        agent.config.write_text(original)
        agent.reload()

