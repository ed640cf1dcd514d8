# Benchmarks (issue 7). Include from the top-level Makefile: `include bench/bench.mk`.
# Root needed (BPF); loopback only; results in bench/results/<date>-<sha>.{json,md,png}.
BENCH_PY ?= .venv/bin/python

.PHONY: bench bench-quick bench-floor

# Both install what a fresh machine lacks first (`setup`: wrk, nginx, PostgreSQL, Redis, the .venv
# with Flask, gunicorn and opentelemetry-instrument, the compiled stages).
# Everything: overhead (nginx; Flask plain/agent/OpenTelemetry), fidelity at 1k/5k/20k/saturation,
# capacity (replay + profile), start-up, pgbench and redis-benchmark. < 15 min.
bench: setup
	$(BENCH_PY) -m bench.run

# Shorter runs, no database clients. < 3 min.
bench-quick: setup
	$(BENCH_PY) -m bench.run --quick

# What a capturing BPF program costs at the least on this machine, beside ours (bench/probe_floor.py):
# stand-alone programs of growing content on the socket data path's hooks, nginx under paced wrk. ~2 min.
bench-floor: setup
	$(BENCH_PY) -m bench.probe_floor
