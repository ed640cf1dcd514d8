"""Load generation with ``wrk`` (Debian's 4.1, which has no -R): saturation and fixed rates.

Saturation: plain wrk with N connections. Fixed rate: a Lua ``delay()`` paces the requests on
one schedule per wrk thread (LuaJIT's ffi reads CLOCK_MONOTONIC): each request takes the next
slot, ``1 / rate`` apart, and waits until it, so the offered rate is ``rate`` whatever the
response time, as long as the connections can carry it. Slots already past are sent at once, up
to ``CATCH_UP_MS`` of them (a late timer does not lower the rate; a long stall does not end in a
burst of everything it held up). Without ffi, each connection waits ``conns / rate`` between requests
(below ``rate`` by the response time: 40 connections at 2 ms offered 13-17k instead of 20k).
What counts is the *achieved* rate wrk reports, and it is the one we record. Results come from
a Lua ``done()`` that prints one JSON line.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.procs import pinned

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "err_connect": %d, "err_read": %d, ' ..
    '"err_write": %d, "err_status": %d, "err_timeout": %d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

# wrk asks delay() (ms; it truncates to whole ms) before each request but a connection's first.
_DELAY = """
local interval_ms = @INTERVAL_MS@
local fallback_ms = @WAIT_MS@
local has_ffi, ffi = pcall(require, "ffi")
local now_ms = nil
if has_ffi then
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk, bench_timespec *ts);
  ]]
  local ts = ffi.new("bench_timespec")
  now_ms = function()
    ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
end
local catch_up_ms = @CATCH_UP_MS@
local next_due = nil
delay = function()
  if now_ms == nil then return fallback_ms end
  local t = now_ms()
  if next_due == nil then next_due = t end  -- the schedule starts now, with no backlog
  if next_due < t - catch_up_ms then next_due = t - catch_up_ms end
  local wait = next_due - t
  next_due = next_due + interval_ms
  return wait
end
"""


# How far behind its schedule a paced run may fall and still send the slots it missed, back to
# back: a timer that fired late or a short stall of wrk's CPU, which on a busy machine happen all
# the time and, each missed slot lost, offered 0.65-0.96 of the rate. Past it the rest is skipped,
# so a long stall does not end in a burst of its whole backlog.
CATCH_UP_MS = 100.0


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    # CPU seconds the server under test (its whole process tree) used during the run: what the
    # agent costs inside the traced app itself, apart from the CPU the agent takes from the machine
    server_cpu_s: Optional[float] = None
    # the requests the server read during the run, by its own count (nginx's stub_status): wrk's
    # completed ones and those in flight when it stopped, which are traced too
    served: Optional[int] = None

    def as_dict(self) -> dict[str, float]:
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        if self.server_cpu_s is not None and self.requests:
            out["server_cpu_us_per_req"] = round(self.server_cpu_s / self.requests * 1e6, 2)
        return out


def write_script(workdir: Path, rate: Optional[float], conns: int, close: bool = False, threads: int = 1) -> Path:
    """The Lua script for one run; ``rate`` is the whole run's (each wrk thread paces its share)."""
    text = _DONE
    name = "wrk-sat.lua"
    if rate:
        per_thread = rate / threads
        wait_ms = max(1, round(conns * 1000 / rate))
        text += (_DELAY.replace("@INTERVAL_MS@", repr(1000 / per_thread)).replace("@WAIT_MS@", str(wait_ms))
                 .replace("@CATCH_UP_MS@", repr(CATCH_UP_MS)))
        name = f"wrk-{conns}c-{threads}t-{rate:g}rps.lua"
    if close:  # a new connection per request: the server closes after answering, wrk reconnects
        text += 'wrk.headers["Connection"] = "close"\n'
        name = name.replace(".lua", "-close.lua")
    path = workdir / name
    path.write_text(text)
    return path


def wrk_duration(seconds: float) -> str:
    """wrk's ``-d``: it takes whole seconds only and prints its usage for "1.5s" (bench-quick's Flask
    runs are half its 3 s), so a fraction is rounded up."""
    return f"{max(1, math.ceil(seconds))}s"


def run_wrk(url: str, *, seconds: float, conns: int, threads: int = 1, rate: Optional[float] = None,
            cpus: Optional[str] = None, workdir: Path, close: bool = False) -> WrkResult:
    script = write_script(workdir, rate, conns, close, threads)
    cmd = pinned(["wrk", "-t", str(threads), "-c", str(conns), "-d", wrk_duration(seconds), "--timeout", "5s",
                  "-s", str(script), url], cpus)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    d = json.loads(line[len("WRKJSON "):])
    secs = d["duration_us"] / 1e6
    errors = d["err_connect"] + d["err_read"] + d["err_write"] + d["err_status"] + d["err_timeout"]
    return WrkResult(
        requests=d["requests"], seconds=secs, rps=d["requests"] / secs if secs else 0.0,
        p50_ms=d["p50_us"] / 1000, p90_ms=d["p90_us"] / 1000, p99_ms=d["p99_us"] / 1000,
        max_ms=d["max_us"] / 1000, errors=errors,
    )
