"""bench/report.py: what a run's numbers become (the JSON kept whole, the Markdown tables the READMEs
quote, the chart), and that no run overwrites another. A report that breaks at the end of a
ten-minute run loses the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import report

META = {"date": "2026-12-05", "commit": "abc1234", "mode": "full", "rounds": 3, "seconds": 10.0,
        "server_cpu": "0", "load_cpu": "1", "agent_cpu": "1", "loadavg_start": 0.5, "other_bpf_progs": 0}


def results(mode: str = "full") -> dict[str, Any]:
    plain = {"rps": 4891.2, "p50_ms": 0.73, "p99_ms": 1.51, "ratio_rps": 1.0, "ratio_p99": 1.0,
             "server_cpu_us_per_req": 193.0, "ratio_server_cpu": 1.0}
    agent = {"rps": 4265.4, "p50_ms": 0.79, "p99_ms": 2.44, "ratio_rps": 0.872, "ratio_p99": 1.619,
             "server_cpu_us_per_req": 208.0, "ratio_server_cpu": 1.078, "agent_cpu_s_per_1k": 0.081,
             "agent_rss_mib": 132.4, "agent_peak_rss_mib": 186.0, "spans": 86148, "spans_expected": 86142,
             "drops_total": {}}
    fidelity = [{"level": "20k", "placement": "unpinned", "rps": 19789.3, "requests": 198269, "spans": 222673,
                 "spans_expected": 396538, "span_ratio": 0.56155, "drops": {"kernel_ringbuf_full": 347485},
                 "missing_not_counted": 0, "agent_cpu_share": 0.59, "receiver_cpu_share": 0.12}]
    startup = {"warm_ready_s_median": 2.3, "warm_compile_s_median": 1.54, "warm_attach_s_median": 0.47,
               "warm_rss_mib_median": 91.0, "cold": {"ready_s": 6.85}}
    return {"meta": {**META, "mode": mode}, "overhead": {"flask": {"plain": plain, "agent": agent}},
            "fidelity": fidelity, "startup": startup}


def test_the_flask_rounds_are_said_as_the_run_made_them() -> None:
    r = results("quick")
    r["overhead"]["flask"]["info"] = {"rounds": 3, "seconds": 3.0}  # bench-quick: whole rounds
    first = report.markdown(r).splitlines()[0]
    assert "(quick; 3 rounds x 10.0 s, medians; Flask in 3 rounds x 3 s, " in first


def test_no_run_overwrites_another_of_the_same_commit(tmp_path: Path) -> None:
    assert report.free_stem(tmp_path, "2026-12-07-abc1234-floor") == "2026-12-07-abc1234-floor"
    (tmp_path / "2026-12-07-abc1234-floor.json").write_text("{}")
    (tmp_path / "2026-12-07-abc1234-floor-2.json").write_text("{}")
    assert report.free_stem(tmp_path, "2026-12-07-abc1234-floor") == "2026-12-07-abc1234-floor-3"


def test_the_tables_carry_the_runs_numbers() -> None:
    md = report.markdown(results())
    lines = md.splitlines()
    assert lines[0].startswith("Run 2026-12-05 at abc1234 (full; 3 rounds x 10.0 s, medians; Flask in 6 rounds x 5 s, "
                               "its ratios the medians of the per-round ratios;")
    assert "| flask | plain | 4891 | 1.000 | 0.73 | 1.51 | 1.000 | 193.0 (1.000) | - | - | - | - |" in lines
    assert ("| flask | agent (default: idle policy, nice 10) | 4265 | 0.872 | 0.79 | 2.44 | 1.619 | 208.0 (1.078) "
            "| 0.081 | 132 / 186 | 86148 / 86142 | 0 |") in lines
    assert ("| 20k | unpinned | 19789 | 198269 | 222673 / 396538 (56.16%) | kernel_ringbuf_full 347485 | 0 "
            "| 0.59 / 0.12 |") in lines
    assert lines[-1] == ("Start-up: start to READY=1 **2.30 s** with a header tree from an earlier start (compile "
                         "1.54 s, attach 0.47 s), 6.85 s on a first start; RSS after start 91 MiB.")


def test_a_repeated_level_shows_its_median_run_and_the_spread() -> None:
    from bench.scenarios import _median_run

    def run(ratio: float, spans: int, not_counted: int) -> dict[str, Any]:
        return {**results()["fidelity"][0], "span_ratio": ratio, "spans": spans, "missing_not_counted": not_counted}

    row = _median_run([run(0.8917, 356254, 0), run(0.7673, 306660, 7), run(1.0, 399684, 0)])
    assert row["spans"] == 356254 and row["span_ratio"] == 0.8917
    assert row["span_ratios"] == [0.8917, 0.7673, 1.0]
    assert row["missing_not_counted"] == 7  # the worst run's, not the median's
    md = report.markdown({**results(), "fidelity": [row]})
    assert ("| 20k | unpinned | 19789 | 198269 | 356254 / 396538 (89.17%; median of 3 runs, 76.7-100.0%) "
            "| kernel_ringbuf_full 347485 | 7 | 0.59 / 0.12 |") in md.splitlines()
    assert _median_run([run(0.9, 1, 0), run(0.5, 2, 0)])["spans"] == 2  # even count: the lower middle


def test_write_keeps_every_run(tmp_path: Path) -> None:
    first = report.write(results(), tmp_path)
    second = report.write(results(), tmp_path)  # the same commit measured again
    quick = report.write(results("quick"), tmp_path)
    assert [p.name for p in first.values()] == ["2026-12-05-abc1234.json", "2026-12-05-abc1234.md",
                                                "2026-12-05-abc1234.png"]
    assert second["json"].name == "2026-12-05-abc1234-2.json"
    assert quick["md"].name == "2026-12-05-abc1234-quick.md"
    assert json.loads(first["json"].read_text()) == results()  # every number, as measured
    assert first["md"].read_text() == report.markdown(results())
    assert first["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
