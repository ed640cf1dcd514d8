"""Real PostgreSQL 15, MariaDB and Redis 7 servers for tests, each in a temp dir on a loopback port.

The servers are Debian's packages, started as child processes of the test run (never the
system services). PostgreSQL refuses to run as root, so its data directory belongs to the
``postgres`` user and the server runs under ``runuser -u postgres``; MariaDB and Redis run as
root with their own temp directories. ``stop()`` ends only the process that ``start`` spawned.

Usage (pytest)::

    with postgres_server(free_port()) as pg:  # tests.support.ports
        psycopg.connect(pg.dsn)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

PG_BIN = "/usr/lib/postgresql/15/bin"
HOST = "127.0.0.1"


@dataclass
class RunningServer:
    kind: str
    port: int
    workdir: str
    proc: subprocess.Popen[bytes]
    user: str = ""
    password: str = ""
    database: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def dsn(self) -> str:
        """libpq connection string (PostgreSQL only)."""
        return f"host={HOST} port={self.port} user={self.user} dbname={self.database}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Block until something accepts on 127.0.0.1:port, or fail if the server exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout}s")


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def start_postgres(port: int, password: str = "") -> RunningServer:
    """initdb into a temp dir owned by postgres, then run postgres on 127.0.0.1:port.

    Auth is ``trust`` unless ``password`` is given (then the ``postgres`` user gets that
    password and host connections use scram-sha-256).
    """
    workdir = tempfile.mkdtemp(prefix="hostagent-pg-")
    os.chmod(workdir, 0o755)
    data = os.path.join(workdir, "data")
    os.mkdir(data)
    shutil.chown(data, "postgres", "postgres")
    auth = "scram-sha-256" if password else "trust"
    init = ["runuser", "-u", "postgres", "--", f"{PG_BIN}/initdb", "-D", data, "-U", "postgres",
            "--auth-local=trust", f"--auth-host={auth}", "-E", "UTF8", "--locale=C.UTF-8"]
    if password:
        pwfile = os.path.join(workdir, "pw")
        with open(pwfile, "w") as f:
            f.write(password + "\n")
        shutil.chown(pwfile, "postgres", "postgres")
        init.append(f"--pwfile={pwfile}")
    _run(init)
    proc = subprocess.Popen(
        ["runuser", "-u", "postgres", "--", f"{PG_BIN}/postgres", "-D", data, "-h", HOST,
         "-p", str(port), "-k", data, "-c", "fsync=off", "-c", "ssl=off"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "log"), "wb"),
    )
    server = RunningServer("postgresql", port, workdir, proc, user="postgres", password=password,
                           database="postgres")
    try:
        wait_port(port, proc)
    except Exception:
        server.stop()
        raise
    return server


def start_mariadb(port: int) -> RunningServer:
    """mariadb-install-db into a temp datadir, then mariadbd --user=root on 127.0.0.1:port.

    The root account is created with ``normal`` authentication and an empty password, so TCP
    clients log in as root without a socket. A ``test`` database exists.
    """
    workdir = tempfile.mkdtemp(prefix="hostagent-maria-")
    data = os.path.join(workdir, "data")
    sock = os.path.join(workdir, "mysqld.sock")
    _run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
          "--auth-root-authentication-method=normal", "--skip-test-db"])
    proc = subprocess.Popen(
        ["mariadbd", "--no-defaults", f"--datadir={data}", "--user=root", f"--port={port}",
         f"--bind-address={HOST}", f"--socket={sock}", f"--pid-file={workdir}/mysqld.pid",
         "--innodb-buffer-pool-size=16M", "--skip-log-bin",
         "--ssl=0", f"--log-error={workdir}/error.log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = RunningServer("mariadb", port, workdir, proc, user="root", database="test",
                           extra={"socket": sock})
    try:
        wait_port(port, proc)
        _run(["mariadb", "--no-defaults", f"--socket={sock}", "-uroot", "-e",
              "CREATE DATABASE IF NOT EXISTS test"])
    except Exception:
        server.stop()
        raise
    return server


def start_redis(port: int, password: str = "", extra_args: tuple[str, ...] = ()) -> RunningServer:
    """redis-server with no persistence, in a temp dir, on 127.0.0.1:port."""
    workdir = tempfile.mkdtemp(prefix="hostagent-redis-")
    cmd = ["redis-server", "--port", str(port), "--bind", HOST, "--dir", workdir, "--save", "",
           "--appendonly", "no", "--daemonize", "no", "--logfile", os.path.join(workdir, "log")]
    if password:
        cmd += ["--requirepass", password]
    cmd += list(extra_args)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RunningServer("redis", port, workdir, proc, password=password)
    try:
        wait_port(port, proc)
    except Exception:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def postgres_server(port: int, password: str = "") -> Iterator[RunningServer]:
    server = start_postgres(port, password)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def mariadb_server(port: int) -> Iterator[RunningServer]:
    server = start_mariadb(port)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def redis_server(port: int, password: str = "", extra_args: tuple[str, ...] = ()) -> Iterator[RunningServer]:
    server = start_redis(port, password, extra_args)
    try:
        yield server
    finally:
        server.stop()
