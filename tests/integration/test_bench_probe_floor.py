"""bench/probe_floor.py measures what it says: each variant's programs compile, load and run on
the socket-layer hooks under a real nginx and wrk, and the capturing ones put one record per call
in the ring holding the call's bytes (a variant whose copy faulted or whose records the ring
refused would look cheaper than it is)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.probe_floor import VARIANTS, Load, measure_ours, measure_variant
from bench.servers import Proc, nginx
from hostagent.kernel.headers import find_kernel_headers
from tests.support.ports import free_port

pytestmark = pytest.mark.root
PORT = free_port()


@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Load]:
    root = tmp_path_factory.mktemp("probe-floor")
    mp = pytest.MonkeyPatch()
    # the variants are plain bcc programs: they compile against the tree the agent would choose
    mp.setenv("BCC_KERNEL_SOURCE", str(find_kernel_headers(None, root / "run", set_env=False).path))
    proc: Proc = nginx(root / "nginx", PORT, None)
    try:
        yield Load(f"http://127.0.0.1:{PORT}/index.html", root, seconds=1.0, rate=1000, conns=4)
    finally:
        proc.stop()
        mp.undo()


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_runs_on_both_hooks_for_every_call(load: Load, variant: str) -> None:
    row = measure_variant(variant, load)
    assert 970 <= row["rps"] <= 1030 and row["requests"] >= 970, row
    # keep-alive: one send and one receive per request at each end (wrk's and nginx's); a receive
    # that found nothing (EAGAIN) runs the program too
    assert row["send_runs_per_request"] == pytest.approx(2.0, abs=0.05), row
    assert row["recv_runs_per_request"] == pytest.approx(2.0, abs=0.05), row
    assert row["send_ns_per_run"] > 0 and row["recv_ns_per_run"] > 0, row
    assert row["copy_faults"] == row["ring_refused"] == 0, row
    if variant in ("minimal", "reserve"):
        assert row["records_per_request"] == 4.0, row
        # nginx's response goes out by writev: its buffer argument is the iovec array, not bytes
        assert row["copied_per_request"] == 3.0, row
    else:
        assert "records_per_request" not in row


def test_ours_is_measured_on_the_same_hooks(load: Load) -> None:
    row = measure_ours(load)
    assert row["send_runs_per_request"] == pytest.approx(2.0, abs=0.05), row
    assert row["recv_runs_per_request"] == pytest.approx(2.0, abs=0.05), row
    assert row["send_ns_per_run"] > 0 and row["recv_ns_per_run"] > 0, row
