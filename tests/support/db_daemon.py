"""Helpers for the database scenarios run through the real daemon (tests/integration/test_db_*_daemon.py).

The daemon captures every process on the host, so a test picks its own spans out of what the
receiver got: CLIENT spans by the server port they name (``server.port``), SERVER spans by the
server process that made them (resource ``process.pid``, or its parent for PostgreSQL's forked
backends). Counts are waited for and then given a second more, so that a span too many shows up
as a failure instead of arriving after the assertion.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tests.support.agent import Agent
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan

DB_PROBES = ["postgres", "mysql", "redis"]
# 16 KiB per syscall: a redis-py pipeline of 100 SETs is one ~3.3 KB write; with the default
# 1024 bytes the kernel would copy only its first ~30 commands and the rest could make no span.
PAYLOAD_BYTES = 16384
SETTLE_S = 1.0


def start_db_agent(workdir: Path, receiver: OtlpGrpcReceiver, **capture: Any) -> Agent:
    extra: dict[str, Any] = {
        "probes": {"enabled": DB_PROBES, "payload_bytes": PAYLOAD_BYTES},
        "exporter": {"batch_size": 256},
    }
    if capture:
        extra["capture"] = dict(capture)
    return Agent(workdir, receiver.endpoint, extra=extra).start()


def stopped_cleanly(agent: Agent) -> str:
    """Stop the agent; return its shutdown drop line (``stopped; dropped: ...``)."""
    assert agent.stop() == 0
    found = re.findall(r"stopped; dropped: (.*?); partly captured: ", agent.log())
    assert found, agent.log()[-3000:]
    return found[-1]


@dataclass(frozen=True)
class Sides:
    client: list[ReceivedSpan]
    server: list[ReceivedSpan]


def _by_start(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return sorted(spans, key=lambda s: (s.start_unix_ns, s.end_unix_ns))


def select(spans: list[ReceivedSpan], port: int, server_pids: Collection[int]) -> Sides:
    client = [s for s in spans if s.kind == "CLIENT" and s.attributes.get("server.port") == port]
    server = [
        s
        for s in spans
        if s.kind == "SERVER"
        and (s.resource.get("process.pid") in server_pids or s.resource.get("process.parent_pid") in server_pids)
    ]
    return Sides(_by_start(client), _by_start(server))


def wait_sides(
    receiver: OtlpGrpcReceiver,
    port: int,
    server_pids: Collection[int],
    clients: int,
    servers: int,
    timeout: float = 20.0,
) -> Sides:
    """Wait for at least ``clients`` CLIENT and ``servers`` SERVER spans, settle, return all of them."""

    def enough(spans: list[ReceivedSpan]) -> bool:
        got = select(spans, port, server_pids)
        return len(got.client) >= clients and len(got.server) >= servers

    try:
        receiver.recorder.wait_for_spans(enough, timeout)
    except TimeoutError:
        pass  # the exact-count assertions below say what was missing
    time.sleep(SETTLE_S)
    return select(receiver.recorder.spans, port, server_pids)


def summary(spans: list[ReceivedSpan], *keys: str) -> list[tuple[Any, ...]]:
    """(name, attributes[keys]...) per span: what most assertions compare exactly."""
    return [(s.name, *(s.attributes.get(k) for k in keys)) for s in spans]


def run_python(
    code: str, *args: str, check: bool = True, env: Optional[dict[str, str]] = None
) -> tuple[int, subprocess.CompletedProcess[bytes]]:
    """Run ``code`` in a fresh interpreter (its own pid, so its CLIENT spans are its own).

    ``env`` adds variables: the way to hand a client a secret, since the agent exports every
    process's command line (process.command_args)."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})  # fmt: skip
    out, err = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(f"client failed ({proc.returncode}):\n{err.decode(errors='replace')}")
    return proc.pid, done


def run(cmd: list[str], check: bool = True) -> tuple[int, subprocess.CompletedProcess[bytes]]:
    """Run a client program; returns its pid and what it printed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed ({proc.returncode}):\n{err.decode(errors='replace')}")
    return proc.pid, done


def pid_of_postmaster(datadir: str) -> Optional[int]:
    """The postmaster's pid from its own pid file (first line)."""
    try:
        return int(Path(datadir, "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
