"""bench/scenarios.py's Flask scheme: many short rounds, plain and the agent in every round with
their order swapped, and ratios as medians of the per-round ratios (the app's speed moves with the
host far more than with the agent; a ratio of medians mixes rounds of different hours)."""

from __future__ import annotations

from typing import Any

from bench.scenarios import _compare, flask_plan


def test_every_round_has_plain_and_the_agent_in_alternating_order() -> None:
    plan = flask_plan(3, ["agent", "agent_nice10", "agent_nice0"])
    assert len(plan) == 6
    assert [r[:2] for r in plan] == [["plain", "agent"], ["agent", "plain"]] * 3
    for cfg in ("agent_nice10", "agent_nice0", "otel"):
        assert sum(cfg in r for r in plan) == 3  # as many runs as the rounds asked for
    assert all(r[-1] == "otel" for r in plan if "otel" in r)
    assert flask_plan(2, ["agent"]) == [["plain", "agent"], ["agent", "plain", "otel"]] * 2


def test_bench_quick_has_whole_rounds_with_opentelemetry_in_each() -> None:
    assert flask_plan(3, ["agent"], halves=False) == [["plain", "agent", "otel"], ["agent", "plain", "otel"],
                                                      ["plain", "agent", "otel"]]


def _run(rps: float, p99: float, cpu: float, r: int) -> dict[str, Any]:
    return {"rps": rps, "p99_ms": p99, "server_cpu_us_per_req": cpu, "round": r}


def test_per_round_ratios_pair_runs_by_round_and_keep_the_ratio_of_medians() -> None:
    # plain drifts from 2,000 to 3,000 req/s; the agent costs 5% in every round
    plains = [2000.0, 3000.0, 2100.0, 2900.0]
    runs = {"plain": [_run(v, 4.0, 1e6 / v, r) for r, v in enumerate(plains)],
            "agent": [_run(v * 0.95, 4.2, 1e6 / v / 0.95, r) for r, v in enumerate(plains)],
            # measured in rounds 1 and 3 only (the fast ones)
            "agent_nice0": [_run(plains[r] * 0.9, 8.0, 1e6 / plains[r] / 0.9, r) for r in (1, 3)]}
    out = _compare(runs, {}, per_round=True)
    assert out["agent"]["ratio_rps"] == 0.95
    assert out["agent"]["round_ratios_rps"] == [0.95] * 4
    assert out["agent"]["ratio_p99"] == 1.05
    assert out["agent"]["ratio_server_cpu"] == round(1 / 0.95, 4)
    # paired with the plain run of its own round, not with plain's first two
    assert out["agent_nice0"]["round_ratios_rps"] == [0.9, 0.9]
    assert out["agent_nice0"]["ratio_rps"] == 0.9
    # the ratio of the medians is still there: its rounds came from different hours
    assert out["agent_nice0"]["ratio_rps_of_medians"] == round(2655.0 / 2500.0, 4)  # 1.062: "faster than plain"
    assert "round" not in out["plain"]


def test_without_per_round_the_ratios_stay_those_of_the_medians() -> None:
    runs = {"plain": [{"rps": 100.0, "p99_ms": 1.0}, {"rps": 200.0, "p99_ms": 1.0}],
            "agent": [{"rps": 90.0, "p99_ms": 1.0}, {"rps": 100.0, "p99_ms": 1.0}]}
    out = _compare(runs, {})
    assert out["agent"]["ratio_rps"] == round(95.0 / 150.0, 4)
    assert out["agent"]["round_ratios_rps"] == [0.9, 0.5]
    assert "ratio_rps_of_medians" not in out["agent"]
