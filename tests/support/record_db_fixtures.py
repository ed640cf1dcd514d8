"""Record the database parser fixtures from real servers and real clients.

Run as root from the repository root:  .venv/bin/python -m tests.support.record_db_fixtures
It starts PostgreSQL 15, MariaDB and Redis 7 (tests.support.db_servers), puts a recording
relay (tests.support.tcp_recorder) in front of each, drives real clients through it and writes
tests/fixtures/db/<name>.json. Each scenario uses one client connection and says in its note
what was sent, which is what the unit tests assert against. Servers and relays listen on ports
from tests.support.ports.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support import db_servers
from tests.support.ports import free_port
from tests.support.tcp_recorder import HOST, Recorder

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "db"
PY = sys.executable


@contextlib.contextmanager
def recording(name: str, note: str, server_port: int) -> Iterator[int]:
    listen_port = free_port()
    rec = Recorder(listen_port, server_port)
    try:
        yield listen_port
        time.sleep(0.3)
    finally:
        rec.close()
    if not rec.connections:
        raise RuntimeError(f"{name}: no connection was recorded")
    rec.save(OUT / f"{name}.json", name, note)
    print(f"recorded {name}: {len(rec.connections[0])} chunks")


def sh(cmd: list[str], stdin: str = "", check: bool = True) -> None:
    subprocess.run(cmd, input=stdin.encode(), check=check, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- PostgreSQL
def psql(port: int, *args: str, stdin: str = "", check: bool = True) -> None:
    sh(["psql", "-X", "-q", "-h", HOST, "-p", str(port), "-U", "postgres", "-d", "postgres",
        *args], stdin=stdin, check=check)


def record_postgres(server_port: int) -> None:
    psql(server_port, "-c", "CREATE TABLE users (id int primary key, name text)")
    scen: list[tuple[str, str, Callable[[int], None]]] = [
        ("pg_psql_simple", "psql script: 3 Queries (INSERT, SELECT WHERE id = 1, SELECT count(*))",
         lambda p: psql(p, stdin="INSERT INTO users VALUES (1, 'alice'), (2, 'bob');\n"
                              "SELECT id, name FROM users WHERE id = 1;\n"
                              "SELECT count(*) FROM users;\n")),
        ("pg_psql_multi", "psql -c: one Query message with 3 statements (SELECT 1; SELECT 2; UPDATE)",
         lambda p: psql(p, "-c", "SELECT 1; SELECT 'two'; UPDATE users SET name = 'x' WHERE id = 42")),
        ("pg_psql_error", "psql -c: SELECT * FROM missing_table -> 42P01",
         lambda p: psql(p, "-c", "SELECT * FROM missing_table", check=False)),
        ("pg_psql_txn", "psql script: BEGIN; INSERT; UPDATE; COMMIT (4 Queries)",
         lambda p: psql(p, stdin="BEGIN;\nINSERT INTO users VALUES (3, 'carol');\n"
                              "UPDATE users SET name = 'caroline' WHERE id = 3;\nCOMMIT;\n")),
        ("pg_psql_copy", "psql -c: COPY users TO STDOUT (2+ rows out)",
         lambda p: psql(p, "-c", "COPY (SELECT id, name FROM users ORDER BY id) TO STDOUT")),
        ("pg_psycopg_prepared", "psycopg prepare_threshold=0: 2x SELECT by id, INSERT, failing SELECT",
         lambda p: run_py(PSYCOPG_PREPARED, p)),
        ("pg_psycopg_pipeline", "psycopg pipeline: 3 executes (SELECT, INSERT, SELECT) then error",
         lambda p: run_py(PSYCOPG_PIPELINE, p)),
    ]
    for name, note, fn in scen:
        with recording(name, note, server_port) as port:
            fn(port)


PSYCOPG_PREPARED = """
import sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres",
                       prepare_threshold=0, sslmode="disable", autocommit=True)
conn.execute("SELECT id, name FROM users WHERE id = %s", (1,)).fetchall()
conn.execute("SELECT id, name FROM users WHERE id = %s", (2,)).fetchall()
conn.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (10, "dave"))
try:
    conn.execute("SELECT * FROM nope WHERE id = %s", (1,))
except psycopg.errors.UndefinedTable:
    pass
conn.close()
"""

PSYCOPG_PIPELINE = """
import sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres",
                       sslmode="disable", autocommit=True)
with conn.pipeline():
    c1 = conn.execute("SELECT name FROM users WHERE id = %s", (1,))
    conn.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (11, "erin"))
    c3 = conn.execute("SELECT count(*) FROM users")
print(c1.fetchall(), c3.fetchall())
try:
    with conn.pipeline():
        conn.execute("SELECT 1")
        conn.execute("SELECT * FROM nope")
        conn.execute("SELECT 3")
except psycopg.errors.UndefinedTable:
    pass
conn.close()
"""


# A result set bigger than one read, then small statements on the same connection: what a pooled
# connection looks like around a big SELECT (the unit tests cut the result into a client's reads).
PSYCOPG_BIG_RESULT = """
import sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres",
                       sslmode="disable", autocommit=True)
conn.execute("SELECT repeat('x', 100) || g AS v FROM generate_series(1, 2000) g").fetchall()
for i in (1, 2, 3):
    conn.execute("SELECT %s::int AS after", (i,)).fetchall()
conn.close()
"""


def record_postgres_big_result(server_port: int) -> None:
    note = ("psycopg, one connection: SELECT of 2000 rows of 104-107 bytes (about 230 KB of DataRows), "
            "then SELECT %s::int AS after (1, 2, 3)")
    with recording("pg_psycopg_big_result", note, server_port) as port:
        run_py(PSYCOPG_BIG_RESULT, port)


PYMYSQL_BIG_RESULT = """
import sys, pymysql
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database="test")
cur = conn.cursor()
cur.execute("SELECT CONCAT(REPEAT('x', 100), seq) AS v FROM seq_1_to_2000")
cur.fetchall()
for i in (1, 2, 3):
    cur.execute("SELECT %s AS after", (i,))
    cur.fetchall()
conn.close()
"""


def record_mariadb_big_result(server_port: int) -> None:
    note = ("PyMySQL, one connection: SELECT of 2000 rows of 101-104 bytes (about 210 KB of rows), "
            "then SELECT <n> AS after (1, 2, 3)")
    with recording("my_pymysql_big_result", note, server_port) as port:
        run_py(PYMYSQL_BIG_RESULT, port)


def run_py(code: str, port: int, *extra: str) -> None:
    subprocess.run([PY, "-c", code, str(port), *extra], check=True, stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------- MariaDB
def mysql_cli(port: int, sql: str, check: bool = True) -> None:
    sh(["mariadb", "--no-defaults", "-h", HOST, "-P", str(port), "-uroot", "--skip-ssl", "test",
        "-e", sql], check=check)


PYMYSQL = """
import sys, pymysql
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database="test",
                       client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
cur = conn.cursor()
cur.execute("SELECT id, name FROM people WHERE id = %s", (1,))
cur.fetchall()
cur.execute("INSERT INTO people (id, name) VALUES (%s, %s)", (20, "o'hara"))
try:
    cur.execute("SELECT * FROM missing_table")
except pymysql.err.ProgrammingError:
    pass
cur.execute("SELECT 1; SELECT 2")
while cur.nextset():
    pass
conn.commit()
conn.close()
"""

CONNECTOR_PREPARED = """
import sys, mysql.connector
conn = mysql.connector.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database="test",
                               ssl_disabled=True, use_pure=True)
cur = conn.cursor(prepared=True)
cur.execute("SELECT id, name FROM people WHERE id = ?", (1,))
cur.fetchall()
cur.execute("SELECT id, name FROM people WHERE id = ?", (2,))
cur.fetchall()
cur.execute("UPDATE people SET name = ? WHERE id = ?", ("zed", 2))
try:
    cur.execute("SELECT * FROM missing_table WHERE id = ?", (1,))
except mysql.connector.Error:
    pass
cur.close()
conn.close()
"""


# PyMySQL's callproc(): the arguments as user variables, then CALL; the rows taken, no nextset(),
# then the process exits (the unit tests leave out the CALL's last OK, as when it came too late).
PYMYSQL_CALLPROC = """
import sys, pymysql
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database="test", autocommit=True)
cur = conn.cursor()
cur.callproc("name_of", (1,))
assert cur.fetchall() == (("a",),)
"""


def record_mariadb_callproc(server_port: int) -> None:
    mysql_cli(server_port, "CREATE TABLE users (id int primary key, name varchar(20)); "
                           "INSERT INTO users VALUES (1, 'a'), (2, 'b'); "
                           "CREATE PROCEDURE name_of(IN i INT) SELECT name FROM users WHERE id = i")
    note = "PyMySQL callproc('name_of', (1,)), fetchall, then the process exits (no nextset, no close)"
    with recording("my_pymysql_callproc", note, server_port) as port:
        run_py(PYMYSQL_CALLPROC, port)


def record_mariadb(server_port: int) -> None:
    mysql_cli(server_port, "CREATE TABLE people (id int primary key, name varchar(40));"
                           "INSERT INTO people VALUES (1, 'ann'), (2, 'ben')")
    scen: list[tuple[str, str, Callable[[int], None]]] = [
        ("my_cli_queries", "mariadb -e: select @@version_comment (client), SELECT WHERE id = 1, "
                           "SELECT count(*), UPDATE (client splits on ;)",
         lambda p: mysql_cli(p, "SELECT id, name FROM people WHERE id = 1; SELECT count(*) FROM people; "
                                "UPDATE people SET name = 'bob' WHERE id = 2")),
        ("my_cli_error", "mariadb -e: SELECT * FROM missing_table -> 1146 42S02",
         lambda p: mysql_cli(p, "SELECT * FROM missing_table", check=False)),
        ("my_pymysql", "PyMySQL MULTI_STATEMENTS: SELECT, INSERT, error 1146, 'SELECT 1; SELECT 2', COMMIT",
         lambda p: run_py(PYMYSQL, p)),
        ("my_connector_prepared", "mysql-connector prepared=True: 2x SELECT ?, UPDATE ?, failing prepare",
         lambda p: run_py(CONNECTOR_PREPARED, p)),
    ]
    for name, note, fn in scen:
        with recording(name, note, server_port) as port:
            fn(port)


# ---------------------------------------------------------------- Redis
REDIS_PIPELINE = """
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), protocol=2)
p = r.pipeline(transaction=False)
for i in range(100):
    p.set(f"key:{i}", f"value-{i}") if i % 2 == 0 else p.get(f"key:{i-1}")
p.execute()
r.close()
"""

REDIS_MULTI = """
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), protocol=2)
p = r.pipeline(transaction=True)
p.incr("counter"); p.lpush("list", "a", "b"); p.get("counter")
p.execute()
try:
    r.lpush("counter", "x")
except redis.ResponseError:
    pass
try:
    r.execute_command("NOSUCHCMD", "secretarg")
except redis.ResponseError:
    pass
r.close()
"""

REDIS_AUTH = """
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), password="s3cr3t-Pa55", protocol=2)
r.set("a", "1"); r.get("a")
r.close()
"""

REDIS_RESP3 = "".join(
    ["HSET h f1 v1 f2 v2\n", "HGETALL h\n", "SADD s m1 m2\n", "SMEMBERS s\n", "ZADD z 1.5 m\n",
     "ZSCORE z m\n"]
    + [f"DEBUG PROTOCOL {kind}\n"
       for kind in ("verbatim", "true", "null", "double", "map", "set", "push")]
)

REDIS_PUBSUB = """
import sys, time, redis
port = int(sys.argv[1])
r = redis.Redis(host="127.0.0.1", port=port, protocol=2)
ps = r.pubsub()
ps.subscribe("ch1", "ch2")
other = redis.Redis(host="127.0.0.1", port=int(sys.argv[2]))  # straight to the server: not recorded
time.sleep(0.2)
other.publish("ch1", "hello"); other.publish("ch2", "world")
got = 0
deadline = time.time() + 5
while got < 4 and time.time() < deadline:
    m = ps.get_message(timeout=1)
    if m:
        got += 1
ps.ping()
time.sleep(0.1)
ps.get_message(timeout=1)
ps.unsubscribe()
time.sleep(0.2)
while ps.get_message(timeout=0.5):
    pass
ps.close()
"""


RAW_RESP3 = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(0.3)
for cmd in ([b"HELLO", b"3"], [b"DEBUG", b"PROTOCOL", b"attrib"], [b"DEBUG", b"PROTOCOL", b"bignum"],
            [b"PING"]):
    s.sendall(b"*%d\\r\\n" % len(cmd) + b"".join(b"$%d\\r\\n%s\\r\\n" % (len(a), a) for a in cmd))
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        pass
s.close()
"""


# Commands no list of the parser has, each a connection's first command in the tests (which cut the
# recording before it): ACL (a container), module commands (JSON.GET, FT.SEARCH: unknown to a
# plain Redis, which answers an error), a read-only variant; then known ones.
RAW_FIRST = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(0.3)
for cmd in ([b"ACL", b"WHOAMI"], [b"JSON.GET", b"doc", b"$"], [b"GEORADIUS_RO", b"g", b"0", b"0", b"1", b"km"],
            [b"FT.SEARCH", b"idx", b"it's"], [b"SET", b"after", b"v"], [b"GET", b"after"]):
    s.sendall(b"*%d\\r\\n" % len(cmd) + b"".join(b"$%d\\r\\n%s\\r\\n" % (len(a), a) for a in cmd))
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        pass
s.close()
"""


# Error messages that quote what the client sent, apostrophes inside and around the quotes.
RAW_ERRORS = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(0.3)
for cmd in ([b"GET"], [b"CONFIG", b"it's"], [b"NOSUCHCMD", b"it's", b"s3cret"], [b"ACL", b"SETUSER", b"u", b"it's"],
            [b"SET", b"k", b"v", b"EX", b"it's"], [b"SUBSCRIBE", b"ch"], [b"SET", b"k", b"it's"]):
    s.sendall(b"*%d\\r\\n" % len(cmd) + b"".join(b"$%d\\r\\n%s\\r\\n" % (len(a), a) for a in cmd))
    try:
        while s.recv(65536):
            pass
    except TimeoutError:
        pass
s.close()
"""


def record_redis_more(server_port: int) -> None:
    note = ("raw socket, one command at a time: ACL WHOAMI, JSON.GET doc $, GEORADIUS_RO g 0 0 1 km, "
            "FT.SEARCH idx it's (plain Redis 7: unknown command errors for the two module commands), "
            "SET after v, GET after")
    with recording("redis_first_commands", note, server_port) as port:
        run_py(RAW_FIRST, port)
    note = ("raw socket, one command at a time, each an error quoting what was sent: GET (no key), "
            "CONFIG it's, NOSUCHCMD it's s3cret, ACL SETUSER u it's, SET k v EX it's, SUBSCRIBE ch, "
            "then SET k it's in subscribed mode")
    with recording("redis_errors", note, server_port) as port:
        run_py(RAW_ERRORS, port)


# A reply bigger than one read, then small commands: what a connection looks like around a 4 MB
# GET (the unit tests cut the reply into reads, as a client's recv() does).
RAW_BIG_REPLY = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def cmd(*a):
    s.sendall(b"*%d\\r\\n" % len(a) + b"".join(b"$%d\\r\\n%s\\r\\n" % (len(x), x) for x in a))
def reply(size):
    got = b""
    while len(got) < size:
        got += s.recv(65536)
cmd(b"SET", b"big", b"x" * 20000); reply(5)
cmd(b"GET", b"big"); reply(len(b"$20000\\r\\n") + 20000 + 2)
for n in (1, 2, 3):
    cmd(b"INCR", b"after"); reply(4)
s.close()
"""


def record_redis_big_reply(server_port: int) -> None:
    note = "raw socket, one command at a time: SET big <20000 x>, GET big, INCR after (3 times)"
    with recording("redis_big_reply", note, server_port) as port:
        run_py(RAW_BIG_REPLY, port)


def record_redis(server_port: int, auth_port: int) -> None:
    scen: list[tuple[str, str, int, Callable[[int], None]]] = [
        ("redis_cli", "redis-cli from stdin: SET, GET, INCR, DEL, PING (5 commands, one connection)",
         server_port,
         lambda p: sh(["redis-cli", "-h", HOST, "-p", str(p)],
                      stdin="SET greeting hello\nGET greeting\nINCR hits\nDEL greeting\nPING\n")),
        ("redis_py_pipeline100", "redis-py pipeline of 100 commands (50 SET + 50 GET alternating)",
         server_port, lambda p: run_py(REDIS_PIPELINE, p)),
        ("redis_py_multi", "redis-py MULTI INCR LPUSH GET EXEC, then LPUSH on a string (WRONGTYPE), "
                           "then NOSUCHCMD secretarg (ERR)",
         server_port, lambda p: run_py(REDIS_MULTI, p)),
        ("redis_py_auth", "redis-py with password s3cr3t-Pa55: AUTH, SET, GET", auth_port,
         lambda p: run_py(REDIS_AUTH, p)),
        ("redis_cli_resp3", "redis-cli -3 from stdin: HELLO 3 (by redis-cli), HSET, HGETALL, SADD, "
                            "SMEMBERS, ZADD, ZSCORE, 7x DEBUG PROTOCOL <kind> "
                            "(13 commands from the user + HELLO + COMMAND DOCS)",
         server_port,
         lambda p: sh(["redis-cli", "-3", "-h", HOST, "-p", str(p)], stdin=REDIS_RESP3)),
        ("redis_raw_attrib", "raw socket RESP3: HELLO 3, DEBUG PROTOCOL attrib, DEBUG PROTOCOL bignum, "
                             "PING (one at a time; hiredis and redis-py cannot read attributes)",
         server_port, lambda p: run_py(RAW_RESP3, p)),
        ("redis_py_pubsub", "redis-py pubsub: SUBSCRIBE ch1 ch2, 2 messages, PING, UNSUBSCRIBE",
         server_port, lambda p: run_py(REDIS_PUBSUB, p, str(server_port))),
    ]
    for name, note, sport, fn in scen:
        with recording(name, note, sport) as port:
            fn(port)


# Result sets without rows (db.response.returned_rows 0), and statements with no result set.
PSYCOPG_ZERO_ROWS = """
import sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres",
                       sslmode="disable", autocommit=True)
conn.execute("SELECT id, name FROM users WHERE id < %s", (0,)).fetchall()
conn.execute("INSERT INTO users SELECT %s, 'x' WHERE false RETURNING id", (99,)).fetchall()
conn.execute("UPDATE users SET name = %s WHERE id < 0", ("y",))
conn.execute("SELECT 1 WHERE false").fetchall()
conn.close()
"""

PYMYSQL_ZERO_ROWS = """
import sys, pymysql
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database="test", autocommit=True)
cur = conn.cursor()
cur.execute("SELECT id, name FROM people WHERE id < %s", (0,)); cur.fetchall()
cur.execute("UPDATE people SET name = %s WHERE id < 0", ("y",))
cur.execute("SELECT id FROM people WHERE id = %s", (1,)); cur.fetchall()
conn.close()
"""

CONNECTOR_ZERO_ROWS = """
import sys, mysql.connector
conn = mysql.connector.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database="test",
                               ssl_disabled=True, use_pure=True, autocommit=True)
cur = conn.cursor(prepared=True)
cur.execute("SELECT id, name FROM people WHERE id < ?", (0,)); cur.fetchall()
cur.execute("SELECT id, name FROM people WHERE id = ?", (1,)); cur.fetchall()
cur.close()
conn.close()
"""


def record_zero_rows(pg_port: int, my_port: int) -> None:
    psql(pg_port, "-c", "CREATE TABLE users (id int primary key, name text); INSERT INTO users VALUES (1, 'a')")
    mysql_cli(my_port, "CREATE TABLE people (id int primary key, name varchar(40)); INSERT INTO people VALUES (1, 'a')")
    scen: list[tuple[str, str, int, Callable[[int], None]]] = [
        ("pg_psycopg_zero_rows", "psycopg: SELECT WHERE id < 0 (no rows), INSERT ... WHERE false RETURNING id "
                                 "(no rows), UPDATE of no row, SELECT 1 WHERE false",
         pg_port, lambda p: run_py(PSYCOPG_ZERO_ROWS, p)),
        ("my_pymysql_zero_rows", "PyMySQL: SELECT WHERE id < 0 (no rows), UPDATE of no row, SELECT WHERE id = 1",
         my_port, lambda p: run_py(PYMYSQL_ZERO_ROWS, p)),
        ("my_connector_zero_rows", "mysql-connector prepared=True: SELECT WHERE id < ? (no rows), "
                                   "SELECT WHERE id = ? (one row)",
         my_port, lambda p: run_py(CONNECTOR_ZERO_ROWS, p)),
    ]
    for name, note, server_port, fn in scen:
        with recording(name, note, server_port) as port:
            fn(port)


def record_lowercase(pg_port: int, my_port: int, redis_port: int) -> None:
    """Statements and commands typed in lower case: db.operation.name is the keyword as the server
    knows it (upper case) whatever the case it was sent in."""
    psql(pg_port, "-c", "CREATE TABLE users (id int primary key, name text); INSERT INTO users VALUES (1, 'a')")
    mysql_cli(my_port, "CREATE TABLE people (id int primary key, name varchar(40)); INSERT INTO people VALUES (1, 'a')")
    scen: list[tuple[str, str, Callable[[int], None]]] = [
        ("pg_psql_lowercase", "psql -c: select ... from users where id = 1; update users set ...",
         lambda p: psql(p, "-c", "select id, name from users where id = 1; update users set name = 'b' where id = 1")),
        ("my_cli_lowercase", "mariadb -e: select ... from people where id = 1; delete from people where id = 9",
         lambda p: mysql_cli(p, "select id, name from people where id = 1; delete from people where id = 9")),
        ("redis_cli_lowercase", "redis-cli from stdin: set k v, get k, client setname x, hgetall h",
         lambda p: sh(["redis-cli", "-h", HOST, "-p", str(p)], stdin="set k v\nget k\nclient setname x\nhgetall h\n")),
    ]
    ports = (pg_port, my_port, redis_port)
    for i, (name, note, fn) in enumerate(scen):
        with recording(name, note, ports[i]) as port:
            fn(port)


# COPY both ways and stored procedures (CALL), each client as it is used.
PSYCOPG_COPY = """
import sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres",
                       sslmode="disable", autocommit=True)
cur = conn.cursor()
with cur.copy("COPY users (id, name) FROM STDIN") as cp:
    for row in ((20, "u20"), (21, "u21"), (22, "u22")):
        cp.write_row(row)
with cur.copy("COPY users (id, name) TO STDOUT") as cp:
    print(sum(1 for _ in cp.rows()))
try:
    with cur.copy("COPY users (id, name) FROM STDIN") as cp:
        cp.write_row((20, "dup"))
except psycopg.errors.UniqueViolation:
    pass
conn.close()
"""

PSYCOPG_CALL = """
import sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres",
                       sslmode="disable", autocommit=True)
print(conn.execute("CALL add_one(%s)", (41,)).fetchall())
conn.execute("CALL public.touch()")
conn.close()
"""

PYMYSQL_CALL = """
import sys, pymysql
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database="test", autocommit=True)
cur = conn.cursor()
cur.execute("CALL get_people(%s)", (1,))
cur.fetchall()
while cur.nextset():
    pass
cur.callproc("get_people", (2,))
cur.fetchall()
while cur.nextset():
    pass
conn.close()
"""

CONNECTOR_CALL = """
import sys, mysql.connector
conn = mysql.connector.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database="test",
                               ssl_disabled=True, use_pure=True, autocommit=True)
cur = conn.cursor(prepared=True)
cur.execute("CALL get_people(?)", (1,))
cur.fetchall()
while cur.nextset():
    pass
cur.close()
conn.close()
"""


def record_copy_call(pg_port: int, my_port: int) -> None:
    psql(pg_port, "-c", "CREATE TABLE users (id int primary key, name text); INSERT INTO users VALUES (1, 'a')")
    psql(pg_port, "-c", "CREATE PROCEDURE add_one(INOUT x int) LANGUAGE plpgsql AS $$ BEGIN x := x + 1; END $$")
    psql(pg_port, "-c", "CREATE PROCEDURE touch() LANGUAGE plpgsql AS $$ BEGIN NULL; END $$")
    mysql_cli(my_port, "CREATE TABLE people (id int primary key, name varchar(40)); "
                       "INSERT INTO people VALUES (1, 'a'), (2, 'b'), (3, 'c'); "
                       "CREATE PROCEDURE get_people(IN minid INT) SELECT id, name FROM people WHERE id >= minid")
    scen: list[tuple[str, str, int, Callable[[int], None]]] = [
        ("pg_psycopg_copy", "psycopg cursor.copy: COPY users (id, name) FROM STDIN of 3 rows, COPY users "
                            "(id, name) TO STDOUT (4 rows), COPY FROM STDIN of a duplicate id -> 23505",
         pg_port, lambda p: run_py(PSYCOPG_COPY, p)),
        ("pg_psycopg_call", "psycopg: CALL add_one(41) (INOUT: one row, 42), CALL public.touch() (no result)",
         pg_port, lambda p: run_py(PSYCOPG_CALL, p)),
        ("my_pymysql_call", "PyMySQL: CALL get_people(1) (3 rows, then the CALL's OK), callproc('get_people', "
                            "(2,)): SET @_get_people_0=2, CALL get_people(@_get_people_0) (2 rows, OK)",
         my_port, lambda p: run_py(PYMYSQL_CALL, p)),
        ("my_connector_call", "mysql-connector prepared=True: CALL get_people(?) with 1 (prepare, execute: "
                              "3 rows, then the CALL's OK)",
         my_port, lambda p: run_py(CONNECTOR_CALL, p)),
    ]
    for name, note, server_port, fn in scen:
        with recording(name, note, server_port) as port:
            fn(port)


def record_copy_error(pg_port: int) -> None:
    note = "psql -c: COPY (SELECT 10 / (3 - i) FROM generate_series(1, 5) i) TO STDOUT: 2 rows out, then 22012"
    with recording("pg_psql_copy_error", note, pg_port) as port:
        psql(port, "-c", "COPY (SELECT 10 / (3 - i) FROM generate_series(1, 5) i) TO STDOUT", check=False)


def main() -> None:
    which = set(sys.argv[1:]) or {"pg", "my", "my_callproc", "redis", "redis_more", "redis_big", "zero_rows",
                                  "lowercase", "copy_call", "pg_big", "my_big"}
    if "pg" in which:
        with db_servers.postgres_server(free_port()) as pg:
            record_postgres(pg.port)
    if "my" in which:
        with db_servers.mariadb_server(free_port()) as my:
            record_mariadb(my.port)
    if "my_callproc" in which:
        with db_servers.mariadb_server(free_port()) as my:
            record_mariadb_callproc(my.port)
    if "redis" in which:
        with db_servers.redis_server(free_port(), extra_args=("--enable-debug-command", "yes")) as rd, \
                db_servers.redis_server(free_port(), "s3cr3t-Pa55") as ra:
            record_redis(rd.port, ra.port)
    if "zero_rows" in which:
        with db_servers.postgres_server(free_port()) as pg, db_servers.mariadb_server(free_port()) as my:
            record_zero_rows(pg.port, my.port)
    if "lowercase" in which:
        with db_servers.postgres_server(free_port()) as pg, db_servers.mariadb_server(free_port()) as my, \
                db_servers.redis_server(free_port()) as rd:
            record_lowercase(pg.port, my.port, rd.port)
    if "copy_call" in which:
        with db_servers.postgres_server(free_port()) as pg, db_servers.mariadb_server(free_port()) as my:
            record_copy_call(pg.port, my.port)
            record_copy_error(pg.port)
    if "redis_more" in which:
        with db_servers.redis_server(free_port()) as rm:
            record_redis_more(rm.port)
    if "redis_big" in which:
        with db_servers.redis_server(free_port()) as rb:
            record_redis_big_reply(rb.port)
    if "pg_big" in which:
        with db_servers.postgres_server(free_port()) as pg:
            record_postgres_big_result(pg.port)
    if "my_big" in which:
        with db_servers.mariadb_server(free_port()) as my:
            record_mariadb_big_result(my.port)


if __name__ == "__main__":
    main()
