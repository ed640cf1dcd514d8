"""Live: real PostgreSQL 15 / MariaDB / Redis 7 servers, real clients, the parsers on the bytes.

No BPF here: the recording relay (tests/support/tcp_recorder.py) hands the parsers exactly what
the peers wrote, so these tests prove the parsers against today's servers and drivers (the unit
tests replay recordings). The capture-path versions of these scenarios live in the other
tests/integration/test_db_*.py files. Ports from tests.support.ports, servers and relays alike.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from hostagent.model import Call, Direction, Segment
from hostagent.protocols.base import StreamParser
from hostagent.protocols.mysql import MysqlParser
from hostagent.protocols.postgres import PostgresParser
from hostagent.protocols.redis import RedisParser
from tests.support import db_servers
from tests.support.ports import free_port
from tests.support.tcp_recorder import Recorder

pytestmark = pytest.mark.root


def _parse(rec: Recorder, parser: StreamParser, side: str = "client") -> list[Call]:
    time.sleep(0.2)
    calls: list[Call] = []
    for i, (who, data) in enumerate(rec.connections[-1]):
        mine = (who == "c") == (side == "client")
        seg = Segment(Direction.EGRESS if mine else Direction.INGRESS, data, len(data), i)
        calls += parser.feed(seg)
    return calls + parser.close(10**12)


def _py(code: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", code, *args], check=True, timeout=60)


@pytest.fixture(scope="module")
def pg() -> Iterator[db_servers.RunningServer]:
    with db_servers.postgres_server(free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def maria() -> Iterator[db_servers.RunningServer]:
    with db_servers.mariadb_server(free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def rds() -> Iterator[db_servers.RunningServer]:
    with db_servers.redis_server(free_port(), "pw-live-123") as server:
        yield server


def test_psycopg_pipeline_of_50_prepared_inserts(pg: db_servers.RunningServer) -> None:
    rec = Recorder(free_port(), pg.port)
    try:
        _py("""
import sys, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres",
                       prepare_threshold=0, sslmode="disable", autocommit=True)
conn.execute("CREATE TABLE IF NOT EXISTS live (id int, v text)")
with conn.pipeline():
    for i in range(50):
        conn.execute("INSERT INTO live VALUES (%s, %s)", (i, "x"))
conn.execute("SELECT count(*) FROM live").fetchone()
conn.close()
""", str(rec.listen_port))
    finally:
        rec.close()
    for side in ("client", "server"):
        calls = _parse(rec, PostgresParser(), side)
        assert [c.name for c in calls] == ["CREATE live"] + ["INSERT live"] * 50 + ["SELECT live"]
        assert calls[-1].attributes["db.response.returned_rows"] == 1


def test_psql_error_and_multi_statement(pg: db_servers.RunningServer) -> None:
    rec = Recorder(free_port(), pg.port)
    try:
        subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(rec.listen_port), "-U", "postgres",
                        "-d", "postgres",
                        "-c", "SELECT 1; SELECT 2; SELECT * FROM no_such_table; SELECT 4"],
                       check=False, capture_output=True, timeout=60)  # fmt: skip
    finally:
        rec.close()
    parser = PostgresParser()
    calls = _parse(rec, parser)
    assert [(c.name, c.error_type) for c in calls] == [("SELECT", None), ("SELECT", None),
                                                        ("SELECT no_such_table", "42P01")]  # fmt: skip
    assert parser.stats.extra["skipped"] == 1  # SELECT 4 never ran


def test_mariadb_client_queries_and_error(maria: db_servers.RunningServer) -> None:
    rec = Recorder(free_port(), maria.port)
    try:
        subprocess.run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(rec.listen_port), "-uroot",
                        "--skip-ssl", "test", "-e",
                        "CREATE TABLE IF NOT EXISTS t (a int); INSERT INTO t VALUES (1), (2); "
                        "SELECT a FROM t; SELECT * FROM nope"],
                       check=False, capture_output=True, timeout=60)  # fmt: skip
    finally:
        rec.close()
    calls = _parse(rec, MysqlParser())
    assert [(c.name, c.error_type) for c in calls] == [
        ("CREATE t", None), ("INSERT t", None), ("SELECT t", None), ("SELECT nope", "1146")]  # fmt: skip
    assert calls[2].attributes["db.response.returned_rows"] == 2
    assert all(c.attributes["db.system.name"] == "mariadb" for c in calls)


def test_redis_pipeline_auth_and_multi(rds: db_servers.RunningServer) -> None:
    rec = Recorder(free_port(), rds.port)
    try:
        _py("""
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), password="pw-live-123", protocol=2)
p = r.pipeline(transaction=False)
for i in range(100):
    p.set(f"k{i}", "v")
p.execute()
t = r.pipeline(transaction=True)
t.incr("n"); t.get("n")
t.execute()
r.close()
""", str(rec.listen_port))
    finally:
        rec.close()
    calls = _parse(rec, RedisParser())
    names = [c.name for c in calls if c.name != "CLIENT SETINFO"]
    assert names == ["AUTH"] + ["SET"] * 100 + ["MULTI", "INCRBY", "GET", "EXEC"]
    assert all("pw-live-123" not in repr(c) for c in calls)
