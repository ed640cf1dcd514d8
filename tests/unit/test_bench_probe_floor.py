"""bench/probe_floor.py's summary: each variant's medians over its rounds, a row that lacks a hook's
figure (its program never ran) reads 0 instead of failing, and the table keeps the variants' order."""

from __future__ import annotations

from bench.probe_floor import markdown, summarize


def test_medians_per_variant_in_the_order_they_ran() -> None:
    rows = {
        "empty": [{"send_ns_per_run": 127, "recv_ns_per_run": 115, "rps": 2999},
                  {"send_ns_per_run": 140, "recv_ns_per_run": 110, "rps": 3000},
                  {"send_ns_per_run": 120, "recv_ns_per_run": 130, "rps": 2998}],
        "ours": [{"send_ns_per_run": 1691, "rps": 3000}],  # no receive ran
    }
    medians = summarize(rows)
    assert medians == {"empty": {"send_ns_per_run": 127.0, "recv_ns_per_run": 115.0, "rps": 2999.0},
                       "ours": {"send_ns_per_run": 1691.0, "recv_ns_per_run": 0.0, "rps": 3000.0}}
    assert markdown(medians).splitlines() == ["| variant | send ns/run | recv ns/run | req/s |", "|---|---|---|---|",
                                              "| empty | 127 | 115 | 2999 |", "| ours | 1691 | 0 | 3000 |"]
