"""Redis 7 through the real daemon: real BPF, a real password-protected server, redis-cli and
redis-py, spans at a real OTLP receiver, each test asserting the exact spans.

redis-server is one process on this host, so both ends are captured: every command is one
CLIENT span in the client's process and one SERVER span in redis-server's, in the same order,
with the same name and ``db.query.text`` (every argument a ``?``). The server listens on a free port
(not 6379): detection is by content.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.support import db_servers, servers
from tests.support.agent import Agent
from tests.support.db_daemon import PAYLOAD_BYTES, Sides, run_python, start_db_agent, stopped_cleanly, summary
from tests.support.db_daemon import wait_sides as _wait_sides
from tests.support.otlp_receiver import OtlpGrpcReceiver
from tests.support.ports import free_port
from tests.unit.admin_harness import cli

pytestmark = pytest.mark.root

PORT = free_port()
PASSWORD = "Sup3r-S3cret-Pw-7f1c"
VALUE = "private-value-4e2a"  # a value the tests write: values are never exported either
KEYS = ("db.operation.name", "db.query.text", "db.response.status_code")
# Handed to the clients in their environment, not on their command lines.
SECRETS = {"REDISCLI_AUTH": PASSWORD, "TEST_REDIS_PASSWORD": PASSWORD, "TEST_REDIS_VALUE": VALUE}
# redis 7.0 (Debian 12) has no CLIENT SETINFO (7.2): redis-py sends it on connect and ignores the error
SETINFO = ("CLIENT SETINFO", "CLIENT SETINFO", "CLIENT SETINFO ? ?", "ERR")


@pytest.fixture(scope="module")
def agent(receiver: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = start_db_agent(tmp_path_factory.mktemp("agent-redis"), receiver)
    yield a
    assert stopped_cleanly(a) == "nothing"
    assert PASSWORD not in a.log() and VALUE not in a.log()


@pytest.fixture(scope="module")
def rds(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[db_servers.RunningServer]:
    """The password is set over a Unix socket (not captured) and never on a command line: the
    agent exports every process's command line (see test_password_on_a_command_line_is_exported)."""
    sock = str(tmp_path_factory.mktemp("redis") / "redis.sock")
    with db_servers.redis_server(PORT, extra_args=("--unixsocket", sock)) as server:
        done = subprocess.run(["redis-cli", "-s", sock], input=f"CONFIG SET requirepass {PASSWORD}\n".encode(),
                              capture_output=True, timeout=30, check=True)  # fmt: skip
        assert done.stdout == b"OK\n"
        yield server


@pytest.fixture(autouse=True)
def _clean(receiver: OtlpGrpcReceiver) -> Iterator[None]:
    receiver.recorder.clear()
    yield
    # whatever a test made the agent export: the password and the values are not in it
    exported = receiver.recorder.all_bytes()
    assert PASSWORD.encode() not in exported
    assert VALUE.encode() not in exported


def wait_sides(receiver: OtlpGrpcReceiver, server: db_servers.RunningServer, count: int) -> Sides:
    sides = _wait_sides(receiver, PORT, {server.proc.pid}, count, count)
    assert receiver.recorder.all_bytes(), "nothing exported"
    return sides


def check_sides(sides: Sides, client_pid: int, server: db_servers.RunningServer) -> None:
    assert summary(sides.server, *KEYS) == summary(sides.client, *KEYS)
    for span in sides.client + sides.server:
        assert span.attributes["db.system.name"] == "redis"
        assert span.attributes["network.peer.address"] == "127.0.0.1"
        assert span.attributes["error.type"] == span.attributes["db.response.status_code"] if (
            span.status_code == 2) else "error.type" not in span.attributes  # fmt: skip
    for c in sides.client:
        assert c.attributes["server.address"] == "127.0.0.1" and c.attributes["server.port"] == PORT
        assert c.resource["process.pid"] == client_pid
    for s in sides.server:
        assert s.resource["process.pid"] == server.proc.pid
        assert s.attributes["client.address"] == "127.0.0.1"


def redis_cli(commands: str) -> tuple[int, bytes]:
    """redis-cli reading commands from stdin, one per line, each sent after the last answer; the
    password from REDISCLI_AUTH (redis-cli sends AUTH first)."""
    proc = subprocess.Popen(["redis-cli", "-h", "127.0.0.1", "-p", str(PORT)], env={**os.environ, **SECRETS},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out, _ = proc.communicate(commands.encode(), timeout=60)
    assert proc.returncode == 0
    return proc.pid, out


def test_redis_cli_commands_and_wrongtype(receiver: OtlpGrpcReceiver, rds: db_servers.RunningServer) -> None:
    pid, out = redis_cli(f"SET user:1 {VALUE}\nGET user:1\nINCR visits\nLPUSH user:1 x\nMGET user:1 user:2 visits\n"
                         "DEL user:1 visits\nNOSUCHCOMMAND a\n")  # fmt: skip
    assert b"WRONGTYPE" in out and b"unknown command" in out
    sides = wait_sides(receiver, rds, 9)
    assert summary(sides.client, *KEYS) == [
        ("AUTH", "AUTH", "AUTH ?", None),  # the password is one '?'
        ("COMMAND DOCS", "COMMAND DOCS", "COMMAND DOCS", None),  # redis-cli's hints, when reading stdin
        ("SET", "SET", "SET ? ?", None),
        ("GET", "GET", "GET ?", None),
        ("INCR", "INCR", "INCR ?", None),
        ("LPUSH", "LPUSH", "LPUSH ? ?", "WRONGTYPE"),
        ("MGET", "MGET", "MGET ? ? ?", None),
        ("DEL", "DEL", "DEL ? ?", None),
        ("NOSUCHCOMMAND", "NOSUCHCOMMAND", "NOSUCHCOMMAND ?", "ERR"),
    ]
    wrong = sides.client[5]
    assert wrong.status_code == 2
    assert wrong.status_message == "WRONGTYPE Operation against a key holding the wrong kind of value"
    check_sides(sides, pid, rds)


PIPELINE = """
import os, sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), password=os.environ["TEST_REDIS_PASSWORD"], protocol=2)
p = r.pipeline(transaction=False)
for i in range(25):  # 100 commands in one write, four shapes so that order shows
    p.set(f"pipe:{i:03d}", os.environ["TEST_REDIS_VALUE"])
    p.get(f"pipe:{i:03d}")
    p.expire(f"pipe:{i:03d}", 300)
    p.exists(f"pipe:{i:03d}", "pipe:none")
assert len(p.execute()) == 100
r.close()
"""


def resp_size(*args: str) -> int:
    """Bytes of a command as a RESP array of bulk strings (what redis-py writes)."""
    return len(f"*{len(args)}\r\n") + sum(len(f"${len(a)}\r\n{a}\r\n") for a in args)


def test_redis_py_pipeline_of_100_commands(receiver: OtlpGrpcReceiver, rds: db_servers.RunningServer) -> None:
    pid, _ = run_python(PIPELINE, str(PORT), env=SECRETS)
    # one write of 25 x (SET 52 + GET 27 + EXPIRE 39 + EXISTS 45) = 4075 bytes: more than the
    # default payload_bytes (1024), which would leave most commands uncaptured; 16384 here
    shapes = (("SET", "pipe:000", VALUE), ("GET", "pipe:000"), ("EXPIRE", "pipe:000", "300"),
              ("EXISTS", "pipe:000", "pipe:none"))  # fmt: skip
    sent = 25 * sum(resp_size(*c) for c in shapes)
    assert sent == 4075 and PAYLOAD_BYTES >= sent
    sides = wait_sides(receiver, rds, 103)
    assert (
        summary(sides.client, *KEYS)
        == [
            ("AUTH", "AUTH", "AUTH ?", None),
            SETINFO,
            SETINFO,
        ]
        + [
            ("SET", "SET", "SET ? ?", None),
            ("GET", "GET", "GET ?", None),
            ("EXPIRE", "EXPIRE", "EXPIRE ? ?", None),
            ("EXISTS", "EXISTS", "EXISTS ? ?", None),
        ]
        * 25
    )
    # the pipeline's 100 requests left in one write: one start time on the client side
    assert len({s.start_unix_ns for s in sides.client[3:]}) == 1
    check_sides(sides, pid, rds)


MULTI = """
import os, sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), password=os.environ["TEST_REDIS_PASSWORD"], protocol=2)
t = r.pipeline(transaction=True)
t.incr("tx:n")
t.hset("tx:h", "f", os.environ["TEST_REDIS_VALUE"])
t.get("tx:n")
assert t.execute()[0] >= 1
r.close()
"""


def test_redis_py_multi_exec(receiver: OtlpGrpcReceiver, rds: db_servers.RunningServer) -> None:
    pid, _ = run_python(MULTI, str(PORT), env=SECRETS)
    sides = wait_sides(receiver, rds, 8)
    assert summary(sides.client, *KEYS) == [
        ("AUTH", "AUTH", "AUTH ?", None),
        SETINFO,
        SETINFO,
        ("MULTI", "MULTI", "MULTI", None),
        ("INCRBY", "INCRBY", "INCRBY ? ?", None),  # redis-py's incr() is INCRBY key 1
        ("HSET", "HSET", "HSET ? ? ?", None),
        ("GET", "GET", "GET ?", None),
        ("EXEC", "EXEC", "EXEC", None),
    ]
    check_sides(sides, pid, rds)


def test_wrong_password_is_an_error_and_absent(receiver: OtlpGrpcReceiver, rds: db_servers.RunningServer) -> None:
    proc = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(PORT), "PING"], capture_output=True, timeout=30,
                          env={**os.environ, "REDISCLI_AUTH": VALUE})  # fmt: skip
    assert b"NOAUTH" in proc.stdout
    sides = wait_sides(receiver, rds, 2)
    assert summary(sides.client, *KEYS) == [
        ("AUTH", "AUTH", "AUTH ?", "WRONGPASS"),
        ("PING", "PING", "PING", "NOAUTH"),
    ]
    assert sides.client[0].status_message == "WRONGPASS invalid username-password pair or user is disabled."
    check_sides(sides, sides.client[0].resource["process.pid"], rds)


def test_password_on_a_command_line_is_not_exported(receiver: OtlpGrpcReceiver, rds: db_servers.RunningServer) -> None:
    """The wire never leaks the AUTH argument (the tests above); the process's argv still does.
    redis-cli stays alive (reading stdin) until its spans are out, so its /proc entry is read."""
    cli = subprocess.Popen(["redis-cli", "-h", "127.0.0.1", "-p", str(PORT), "--no-auth-warning", "-a", PASSWORD],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert cli.stdin is not None
        cli.stdin.write(b"PING\n")
        cli.stdin.flush()
        sides = wait_sides(receiver, rds, 3)
    finally:
        cli.communicate(timeout=30)
    assert summary(sides.client, *KEYS) == [("AUTH", "AUTH", "AUTH ?", None),
                                            ("COMMAND DOCS", "COMMAND DOCS", "COMMAND DOCS", None),
                                            ("PING", "PING", "PING", None)]  # fmt: skip
    exported = receiver.recorder.all_bytes()
    receiver.recorder.clear()  # only the assertion below may fail, not the fixture's
    assert PASSWORD.encode() not in exported


FIRST_COMMANDS = """
import os, socket, sys
def command(s, *args):
    s.sendall(b"*%d\\r\\n" % len(args) + b"".join(b"$%d\\r\\n%s\\r\\n" % (len(a), a) for a in args))
    s.recv(65536)
password = os.environ["TEST_REDIS_PASSWORD"].encode()
for first in ([b"ACL", b"WHOAMI"], [b"JSON.GET", b"doc", b"$"], [b"GEORADIUS_RO", b"g", b"0", b"0", b"1", b"km"]):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    command(s, *first)  # before AUTH: NOAUTH (ERR for a command the server lacks)
    command(s, b"AUTH", password)
    command(s, b"GET", b"k")
    s.close()
"""


def test_connections_starting_with_commands_no_list_has(
    receiver: OtlpGrpcReceiver, rds: db_servers.RunningServer
) -> None:
    """ACL, a module command (JSON.GET) and a *_RO variant each open a connection: all traced."""
    pid, _ = run_python(FIRST_COMMANDS, str(PORT), env=SECRETS)
    sides = wait_sides(receiver, rds, 9)
    then = [("AUTH", "AUTH", "AUTH ?", None), ("GET", "GET", "GET ?", None)]
    assert summary(sides.client, *KEYS) == [
        ("ACL WHOAMI", "ACL WHOAMI", "ACL WHOAMI", "NOAUTH"), *then,
        ("JSON.GET", "JSON.GET", "JSON.GET ? ?", "ERR"), *then,  # unknown to a plain Redis, before NOAUTH
        ("GEORADIUS_RO", "GEORADIUS_RO", "GEORADIUS_RO ? ? ? ? ?", "NOAUTH"), *then,
    ]  # fmt: skip
    check_sides(sides, pid, rds)


NGINX_PORT = free_port()
NOT_REDIS = """
import os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"get foo\\r\\n")  # an inline Redis GET to look at; nginx answers 400 and closes
assert s.recv(65536).startswith(b"HTTP/1.1 400")
s.close()
s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))  # then a real Redis command
s.sendall(b"*1\\r\\n$4\\r\\nPING\\r\\n")
assert s.recv(65536) == b"-NOAUTH Authentication required.\\r\\n"
s.close()
"""


def test_line_answered_in_no_resp_is_not_redis(
    agent: Agent, receiver: OtlpGrpcReceiver, rds: db_servers.RunningServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:  # fmt: skip
    """A line Redis' inline detection takes for a command, sent to nginx, is no Redis span (it was
    one, named GET with status OK, on both ends); the Redis PING sent after it is, so the agent got
    that far. Both ends of the nginx connection (the client's, nginx's) are counted as rejected
    Redis in hostagentctl status (and muted, as connections of no known protocol)."""
    before = connection_counts(agent)
    nginx = servers.start_nginx(tmp_path_factory.mktemp("nginx"), NGINX_PORT)
    try:
        pid, _ = run_python(NOT_REDIS, str(NGINX_PORT), str(PORT))
        sides = wait_sides(receiver, rds, 1)
    finally:
        nginx.stop()
    assert summary(sides.client, *KEYS) == [("PING", "PING", "PING", "NOAUTH")]
    assert [(s.name, s.resource["process.pid"], s.attributes.get("server.port")) for s in receiver.recorder.spans
            if s.resource["process.pid"] in (pid, nginx.pid)] == [("PING", pid, PORT)]  # fmt: skip
    after = connection_counts(agent)
    assert after.get("rejected_redis", 0) - before.get("rejected_redis", 0) == 2
    assert after["unknown"] - before.get("unknown", 0) >= 2


def connection_counts(agent: Agent) -> dict[str, int]:
    """``hostagentctl status``'s connection counts (what detection made of connections)."""
    out = cli("--socket", str(agent.workdir / "run" / "admin.sock"), "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    return {k: int(v) for k, v in json.loads(out.stdout).get("connections", {}).items()}
