"""MariaDB through the real daemon: real BPF, a real server, the mariadb client, PyMySQL and
mysql-connector-python (server-side prepared statements), spans at a real OTLP receiver.

mariadbd runs its connections on threads of one process, so both sides are captured: every
statement gives one CLIENT span in the client's process and one SERVER span in mariadbd's, with
the same name and query text. The server listens on a free high port (not 3306): detection is by content.
Setup goes over the server's Unix socket (not captured).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import db_servers
from tests.support.agent import Agent
from tests.support.db_daemon import Sides, run, run_python, start_db_agent, stopped_cleanly, summary, wait_sides
from tests.support.otlp_receiver import OtlpGrpcReceiver
from tests.support.ports import free_port

pytestmark = pytest.mark.root

PORT = free_port()
DB = "test"
KEYS = ("db.operation.name", "db.collection.name", "db.query.text", "db.response.status_code")


@pytest.fixture(scope="module")
def agent(receiver: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = start_db_agent(tmp_path_factory.mktemp("agent-my"), receiver)
    yield a
    assert stopped_cleanly(a) == "nothing"


@pytest.fixture(scope="module")
def maria(agent: Agent) -> Iterator[db_servers.RunningServer]:
    with db_servers.mariadb_server(PORT) as server:
        run(["mariadb", "--no-defaults", f"--socket={server.extra['socket']}", "-uroot", DB, "-e",
             "CREATE TABLE users (id int PRIMARY KEY, name varchar(20));"
             "CREATE TABLE orders (id int PRIMARY KEY, user_id int, total int)"])  # fmt: skip
        yield server


@pytest.fixture(autouse=True)
def _clean(receiver: OtlpGrpcReceiver) -> None:
    receiver.recorder.clear()


def check_sides(sides: Sides, client_pid: int, server: db_servers.RunningServer) -> None:
    """The two ends of each statement agree; the attributes each side adds are right."""
    assert summary(sides.server, *KEYS) == summary(sides.client, *KEYS)
    for c, s in zip(sides.client, sides.server):
        assert s.attributes.get("db.response.returned_rows") == c.attributes.get("db.response.returned_rows")
        assert (s.status_code, s.attributes.get("error.type")) == (c.status_code, c.attributes.get("error.type"))
        # the server's span sits inside the client's: it read the request later, wrote the answer earlier
        assert c.start_unix_ns <= s.start_unix_ns and s.end_unix_ns <= c.end_unix_ns
    for span in sides.client + sides.server:
        a = span.attributes
        assert a["db.system.name"] == "mariadb"
        assert a["db.namespace"] == DB
        assert a["network.transport"] == "tcp" and a["network.peer.address"] == "127.0.0.1"
    for c in sides.client:
        assert c.attributes["server.address"] == "127.0.0.1" and c.attributes["server.port"] == PORT
        assert c.resource["process.pid"] == client_pid
    for s in sides.server:
        assert s.attributes["client.address"] == "127.0.0.1"
        assert s.resource["process.pid"] == server.proc.pid
        assert s.resource["process.executable.name"] == "mariadbd"


def test_mariadb_client_statements_and_error(receiver: OtlpGrpcReceiver, maria: db_servers.RunningServer) -> None:
    pid, done = run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(PORT), "-uroot", "--skip-ssl", DB,
                     "-e", "INSERT INTO users VALUES (1, 'ann'), (2, 'bob'); SELECT name FROM users WHERE id = 2; "
                     "UPDATE users SET name = 'bea' WHERE id = 2; SELECT * FROM nope; SELECT 5"],
                    check=False)  # fmt: skip
    assert b"ERROR 1146 (42S02) at line 1: Table 'test.nope' doesn't exist" in done.stderr
    sides = wait_sides(receiver, PORT, {maria.proc.pid}, 4, 4)
    # the client stops at the first error: SELECT 5 is never sent
    assert summary(sides.client, *KEYS, "error.type") == [
        ("INSERT users", "INSERT", "users", "INSERT INTO users VALUES (?, ?), (?, ?)", None, None),
        ("SELECT users", "SELECT", "users", "SELECT name FROM users WHERE id = ?", None, None),
        ("UPDATE users", "UPDATE", "users", "UPDATE users SET name = ? WHERE id = ?", None, None),
        ("SELECT nope", "SELECT", "nope", "SELECT * FROM nope", "1146", "1146"),
    ]
    assert sides.client[1].attributes["db.response.returned_rows"] == 1
    assert sides.client[3].status_code == 2
    assert sides.client[3].status_message == "Table '?' doesn't exist"  # names and values alike: no raw_sql
    check_sides(sides, pid, maria)


PYMYSQL = """
import sys, pymysql
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database=sys.argv[2],
                       autocommit=True)
with conn.cursor() as cur:
    cur.executemany("INSERT INTO orders VALUES (%s, %s, %s)", [(i, 1, 10 * i) for i in range(1, 4)])
    cur.execute("SELECT id, total FROM orders WHERE user_id = %s ORDER BY id", (1,))
    assert len(cur.fetchall()) == 3
    try:
        cur.execute("SELECT * FROM missing WHERE id = %s", (1,))
    except pymysql.err.ProgrammingError as e:
        assert e.args[0] == 1146, e
    else:
        raise SystemExit("expected 1146")
    cur.execute("DELETE FROM orders WHERE total > %s", (15,))
conn.close()
"""


def test_pymysql(receiver: OtlpGrpcReceiver, maria: db_servers.RunningServer) -> None:
    pid, _ = run_python(PYMYSQL, str(PORT), DB)
    sides = wait_sides(receiver, PORT, {maria.proc.pid}, 5, 5)
    # PyMySQL sets the charset first; it interpolates parameters itself (COM_QUERY), and
    # executemany sends one multi-row INSERT
    assert summary(sides.client, *KEYS) == [
        ("SET", "SET", None, "SET NAMES utf8mb4", None),
        ("INSERT orders", "INSERT", "orders", "INSERT INTO orders VALUES (?, ?, ?),(?, ?, ?),(?, ?, ?)", None),
        ("SELECT orders", "SELECT", "orders", "SELECT id, total FROM orders WHERE user_id = ? ORDER BY id", None),
        ("SELECT missing", "SELECT", "missing", "SELECT * FROM missing WHERE id = ?", "1146"),
        ("DELETE orders", "DELETE", "orders", "DELETE FROM orders WHERE total > ?", None),
    ]
    assert sides.client[2].attributes["db.response.returned_rows"] == 3
    check_sides(sides, pid, maria)


CONNECTOR = """
import sys, mysql.connector
conn = mysql.connector.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database=sys.argv[2],
                               autocommit=True, ssl_disabled=True)
cur = conn.cursor(prepared=True)
for i in (1, 2, 3):  # one COM_STMT_PREPARE, then COM_STMT_EXECUTE by statement id
    cur.execute("SELECT name FROM users WHERE id = ?", (i,))
    cur.fetchall()
cur.execute("UPDATE users SET name = ? WHERE id = ?", ("cy", 1))
cur.close()
conn.close()
"""


def test_connector_prepared_statements(receiver: OtlpGrpcReceiver, maria: db_servers.RunningServer) -> None:
    pid, _ = run_python(CONNECTOR, str(PORT), DB)
    sides = wait_sides(receiver, PORT, {maria.proc.pid}, 6, 6)
    # the connector's own session set-up, then the statements; COM_STMT_RESET and
    # COM_STMT_CLOSE make no span
    assert summary(sides.client, *KEYS) == [
        ("SET", "SET", None, "SET NAMES ? COLLATE ?", None),
        ("SET", "SET", None, "SET @@session.autocommit = ON", None),
        *[("SELECT users", "SELECT", "users", "SELECT name FROM users WHERE id = ?", None)] * 3,
        ("UPDATE users", "UPDATE", "users", "UPDATE users SET name = ? WHERE id = ?", None),
    ]
    check_sides(sides, pid, maria)


CALLS = """
import sys, mysql.connector, pymysql
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database=sys.argv[2], autocommit=True)
cur = conn.cursor()
cur.execute("CALL users_from(%s)", (0,))
cur.fetchall()
while cur.nextset():
    pass
conn.close()
conn = mysql.connector.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database=sys.argv[2],
                               autocommit=True, ssl_disabled=True, use_pure=True)
cur = conn.cursor(prepared=True)
cur.execute("CALL users_from(?)", (0,))  # COM_STMT_PREPARE, then COM_STMT_EXECUTE
cur.fetchall()
while cur.nextset():
    pass
cur.close()
conn.close()
"""


def test_call_names_the_stored_procedure(receiver: OtlpGrpcReceiver, maria: db_servers.RunningServer) -> None:
    """CALL as text (PyMySQL) and prepared (mysql-connector's COM_STMT_EXECUTE): each one span named
    after its procedure, with db.stored_procedure.name and the rows of its result."""
    run(["mariadb", "--no-defaults", f"--socket={maria.extra['socket']}", "-uroot", DB, "-e",
         "DELETE FROM users; INSERT INTO users VALUES (1, 'a'), (2, 'b');"
         "CREATE OR REPLACE PROCEDURE users_from(IN first INT) "
         "SELECT id, name FROM users WHERE id >= first"])  # fmt: skip
    pid, _ = run_python(CALLS, str(PORT), DB)
    sides = wait_sides(receiver, PORT, {maria.proc.pid}, 5, 5)
    keys = (*KEYS, "db.stored_procedure.name", "db.response.returned_rows")
    pymysql_call = ("CALL users_from", "CALL", None, "CALL users_from(?)", None, "users_from", 2)
    for spans in (sides.client, sides.server):
        assert summary(spans, *keys) == [
            ("SET", "SET", None, "SET NAMES utf8mb4", None, None, None),
            pymysql_call,
            ("SET", "SET", None, "SET NAMES ? COLLATE ?", None, None, None),
            ("SET", "SET", None, "SET @@session.autocommit = ON", None, None, None),
            pymysql_call,  # the prepared text is the same: its ? is a parameter marker
        ]
    assert {s.resource["process.pid"] for s in sides.client} == {pid}



CALLPROC_EXIT = """
import sys, pymysql
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database=sys.argv[2], autocommit=True)
cur = conn.cursor()
cur.callproc("name_then_sleep", (1,))
assert cur.fetchall() == (("a",),)
"""  # no nextset(), no close(): the process exits before the CALL's last OK comes

PROCEDURE = """
import sys, pymysql
conn = pymysql.connect(unix_socket=sys.argv[1], user="root", database=sys.argv[2])
conn.cursor().execute("CREATE OR REPLACE PROCEDURE name_then_sleep(IN i INT) "
                      "BEGIN SELECT name FROM users WHERE id = i; DO SLEEP(1); END")
"""


def test_pymysql_callproc_then_the_process_exits(receiver: OtlpGrpcReceiver, maria: db_servers.RunningServer) -> None:
    """PyMySQL's callproc() sets its arguments as user variables, then CALLs; the client takes
    the rows and exits without nextset(), a second before the server ends the CALL with its last
    OK (the procedure sleeps after its SELECT). The client made the CALL and got its rows: its
    span ends with them; the server's ends with the OK it wrote a second later."""
    run(["mariadb", "--no-defaults", f"--socket={maria.extra['socket']}", "-uroot", DB, "-e",
         "DELETE FROM users; INSERT INTO users VALUES (1, 'a'), (2, 'b')"])  # fmt: skip
    run_python(PROCEDURE, maria.extra["socket"], DB)  # over the Unix socket: not captured
    pid, _ = run_python(CALLPROC_EXIT, str(PORT), DB)
    sides = wait_sides(receiver, PORT, {maria.proc.pid}, 3, 3)
    keys = (*KEYS, "db.stored_procedure.name", "db.response.returned_rows")
    for spans in (sides.client, sides.server):
        assert summary(spans, *keys) == [
            ("SET", "SET", None, "SET NAMES utf8mb4", None, None, None),
            ("SET", "SET", None, "SET @`_name_then_sleep_0`=?", None, None, None),
            # the name as written (db.collection.name keeps its quotes too)
            ("CALL `name_then_sleep`", "CALL", None, "CALL `name_then_sleep`(@`_name_then_sleep_0`)", None,
             "`name_then_sleep`", 1),
        ]  # fmt: skip
    assert {s.resource["process.pid"] for s in sides.client} == {pid}
    assert sides.server[2].end_unix_ns - sides.client[2].end_unix_ns > 900_000_000  # the SLEEP(1)
