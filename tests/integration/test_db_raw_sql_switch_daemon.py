"""[capture] raw_sql switched while a pooled connection stays open: real BPF, real PostgreSQL and
MariaDB, one psycopg and one PyMySQL connection opened before the change and used across it.

An acknowledged change applies to every call after the acknowledgement, on every connection:
turned on, the next statement keeps its literals; turned off, the very next one has none again
(that direction matters more: raw SQL carries personal data). Both ways of changing it are
checked: ``hostagentctl capture set --raw-sql`` and a config edit applied by SIGHUP.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import db_servers
from tests.support.agent import Agent
from tests.support.db_daemon import pid_of_postmaster, start_db_agent, stopped_cleanly, wait_sides
from tests.support.otlp_receiver import OtlpGrpcReceiver
from tests.support.ports import free_port
from tests.unit.admin_harness import cli

pytestmark = pytest.mark.root

PG_PORT, MY_PORT = free_port(), free_port()
Servers = tuple[db_servers.RunningServer, db_servers.RunningServer]

# One connection to each server for the whole test; a round of one statement each per line read.
POOL = """
import sys, psycopg, pymysql
pg = psycopg.connect(sys.argv[1], autocommit=True)
my = pymysql.connect(host="127.0.0.1", port=int(sys.argv[2]), user="root", database="test", autocommit=True)
print("ready", flush=True)
for line in sys.stdin:
    n = int(line)
    pg.execute(f"SELECT {n} AS n, 'pg-{n}' AS tag").fetchall()
    with my.cursor() as cur:
        cur.execute(f"SELECT {n} AS n, 'my-{n}' AS tag")
        cur.fetchall()
    print("done", flush=True)
"""
SANITISED = "SELECT ? AS n, ? AS tag"


@pytest.fixture(scope="module")
def agent(receiver: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = start_db_agent(tmp_path_factory.mktemp("agent-rawsql"), receiver)
    yield a
    # calls shed in the kernel while other processes fill the ring are counted, and retried above
    assert re.sub(r"'kernel_ringbuf_full': \d+", "", stopped_cleanly(a)) in ("nothing", "{}")


@pytest.fixture(scope="module")
def servers(agent: Agent) -> Iterator[Servers]:
    with db_servers.postgres_server(PG_PORT) as pg, db_servers.mariadb_server(MY_PORT) as maria:
        pg.extra["datadir"] = str(Path(pg.workdir) / "data")
        yield pg, maria


@contextlib.contextmanager
def pool_of(servers: Servers, receiver: OtlpGrpcReceiver) -> Iterator[subprocess.Popen[str]]:
    """The client process with its two connections open (and used once)."""
    pg, _ = servers
    proc = subprocess.Popen([sys.executable, "-c", POOL, pg.dsn, str(MY_PORT)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        texts(receiver, proc, 0, servers)  # PyMySQL's SET NAMES at connect is not a round's span
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0


def texts(receiver: OtlpGrpcReceiver, pool: subprocess.Popen[str], n: int,
          servers: Servers) -> dict[str, list[object]]:  # fmt: skip
    """Round ``n`` on the pool's two connections: db.query.text of each side's spans."""
    pg, maria = servers
    receiver.recorder.clear()
    assert pool.stdin is not None and pool.stdout is not None
    pool.stdin.write(f"{n}\n")
    pool.stdin.flush()
    assert pool.stdout.readline() == "done\n"
    postmaster = pid_of_postmaster(pg.extra["datadir"])
    assert postmaster is not None
    got: dict[str, list[object]] = {}
    for name, port, pids in (("pg", PG_PORT, {postmaster}), ("my", MY_PORT, {maria.proc.pid})):
        sides = wait_sides(receiver, port, pids, 1, 1)
        got[f"{name} client"] = [s.attributes.get("db.query.text") for s in sides.client]
        got[f"{name} server"] = [s.attributes.get("db.query.text") for s in sides.server]
    return got


def a_round(receiver: OtlpGrpcReceiver, pool: subprocess.Popen[str], n: int, servers: Servers,
            raw: bool) -> None:  # fmt: skip
    """Round ``n`` shows raw or sanitised text on all four ends. The agent sees the whole host: a
    round whose calls were shed in the kernel (the ring full of other processes' traffic, counted)
    is sent again, up to twice, under another number; a wrong text is never retried."""
    for attempt in range(3):
        m = n * 10 + attempt
        got = texts(receiver, pool, m, servers)
        if attempt < 2 and any(not spans for spans in got.values()):
            continue
        assert got == expected(m, raw)
        return


def expected(n: int, raw: bool) -> dict[str, list[object]]:
    pg = f"SELECT {n} AS n, 'pg-{n}' AS tag" if raw else SANITISED
    my = f"SELECT {n} AS n, 'my-{n}' AS tag" if raw else SANITISED
    return {"pg client": [pg], "pg server": [pg], "my client": [my], "my server": [my]}


def ctl(agent: Agent, *args: str) -> None:
    out = cli("--socket", str(agent.workdir / "run" / "admin.sock"), *args, "-o", "json")
    assert out.returncode == 0, out.stderr + agent.log()[-3000:]



def switch(agent: Agent, how: str, raw: bool, original: str) -> None:
    """Turn raw_sql on or off, the admin API's way or the config file's, and wait for the answer."""
    if how == "ctl":
        ctl(agent, "capture", "set", "--raw-sql", "on" if raw else "off")
        return
    agent.config.write_text(original + "\n[capture]\nraw_sql = true\n" if raw else original)
    agent.reload()


@pytest.mark.parametrize("how", ["ctl", "reload"])
@pytest.mark.parametrize("first", [False, True], ids=["opened-sanitised", "opened-raw"])
def test_a_change_applies_to_an_open_connection_both_ways(
    agent: Agent, servers: Servers, receiver: OtlpGrpcReceiver, how: str, first: bool,
) -> None:  # fmt: skip
    """The pool is opened under ``first``, switched, then switched back: each round after an
    acknowledged change follows it. Opened raw, the switch off must stop raw text at once."""
    original = agent.config.read_text()
    try:
        switch(agent, how, first, original)
        with pool_of(servers, receiver) as pool:
            a_round(receiver, pool, 1, servers, raw=first)
            switch(agent, how, not first, original)
            a_round(receiver, pool, 2, servers, raw=not first)
            switch(agent, how, first, original)
            a_round(receiver, pool, 3, servers, raw=first)
    finally:
        agent.config.write_text(original)
        agent.reload()
        if how == "ctl":
            ctl(agent, "reset")
