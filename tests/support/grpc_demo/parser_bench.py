"""Parser cost: microseconds per gRPC unary call (HPACK included) and per DNS query/answer pair.

    .venv/bin/python -m tests.support.grpc_demo.parser_bench

Replays the recorded fixtures through fresh parsers many times (pure CPU, no I/O) and prints the
median of several rounds. The gRPC figure includes connection setup (preface, SETTINGS, PING)
amortised over the 20 calls of grpc_concurrent.json; "mid-way" starts each replay without the
preface so HPACK runs in the partial-table decoder.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from hostagent.model import Direction, Segment
from hostagent.protocols.dns import DnsParser
from hostagent.protocols.http2 import Http2Parser
from tests.support.h2_recorder import load_chunks, segments

FIX = Path(__file__).resolve().parents[2] / "fixtures"


def per_item_us(run: Callable[[], int], rounds: int = 7, repeat: int = 200) -> float:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        items = sum(run() for _ in range(repeat))
        samples.append((time.perf_counter() - t0) / items * 1e6)
    return statistics.median(samples)


def main() -> None:
    grpc = next(iter(segments(load_chunks(FIX / "http2" / "grpc_concurrent.json"), "server").values()))
    shapes = next(iter(segments(load_chunks(FIX / "http2" / "grpc_shapes.json"), "client").values()))

    def grpc_run(segs: list[Segment], reference: bool = False) -> Callable[[], int]:
        def run() -> int:
            p = Http2Parser(reference_hpack=reference)
            n = 0
            for s in segs:
                n += len(p.feed(s))
            return n

        return run

    print(f"gRPC unary (20 concurrent, server side): {per_item_us(grpc_run(grpc)):.1f} us/call")
    print(f"  same, hpack.Decoder (reference=True): {per_item_us(grpc_run(grpc, True)):.1f} us/call")
    print(f"gRPC mixed shapes (client side):        {per_item_us(grpc_run(shapes)):.1f} us/call")
    mid = [s for s in grpc if not s.data.startswith(b"PRI")]
    print(f"gRPC unary, mid-way (partial HPACK):    {per_item_us(grpc_run(mid)):.1f} us/call")

    doc = json.loads((FIX / "dns" / "udp_unconnected.json").read_text())
    dns_segs = [
        Segment(Direction.EGRESS if s["dir"] == "egress" else Direction.INGRESS, bytes.fromhex(s["hex"]),
                len(s["hex"]) // 2, s["ts"], *(s["peer"] or ["", 0]))
        for s in doc["segments"]
    ]  # fmt: skip

    def dns_run() -> int:
        p = DnsParser("udp")
        n = 0
        for s in dns_segs:
            n += len(p.feed(s))
        return n

    print(f"DNS query+answer pair (UDP):            {per_item_us(dns_run, repeat=2000):.1f} us/pair")


if __name__ == "__main__":
    main()
