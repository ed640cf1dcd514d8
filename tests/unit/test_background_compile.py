"""BackgroundCompile: the compile's outcome reaches the main thread unchanged.

The loader here is a stand-in (LoaderStandIn): what is tested is the hand-over between threads,
not bcc; the real compile on a thread is tested in tests/integration/test_daemon_startup.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

import pytest

from hostagent.kernel.background import BackgroundCompile, not_started


class LoaderStandIn:
    """Stands in for BpfCapture: load() records its thread, waits for a go, then returns or raises."""

    def __init__(self, error: Optional[BaseException] = None) -> None:
        self.error = error
        self.go = threading.Event()
        self.loaded_on: Optional[str] = None

    def load(self) -> float:
        self.loaded_on = threading.current_thread().name
        assert self.go.wait(10)
        if self.error is not None:
            raise self.error
        return 0.0


def compile_with(loader: LoaderStandIn, after: Any = None) -> BackgroundCompile:
    return BackgroundCompile(loader, after)  # type: ignore[arg-type]


def test_result_is_the_capture_loaded_on_its_own_thread() -> None:
    loader = LoaderStandIn()
    job = compile_with(loader).start()
    assert not job.done  # the caller goes on while load() runs
    loader.go.set()
    assert job.result() is loader
    assert job.done
    assert loader.loaded_on == "bpf-compile"


def test_the_compile_error_is_raised_again_unchanged_in_the_caller() -> None:
    error = Exception("Failed to compile BPF module <text>")
    loader = LoaderStandIn(error)
    job = compile_with(loader).start()
    loader.go.set()
    with pytest.raises(Exception, match=r"^Failed to compile BPF module <text>$") as caught:
        job.result()
    assert caught.value is error
    with pytest.raises(Exception) as again:  # every later ask says the same
        job.result()
    assert again.value is error


def test_after_runs_on_the_compile_thread_only_when_the_compile_succeeded() -> None:
    ran: list[str] = []
    ok = LoaderStandIn()
    job = compile_with(ok, lambda: ran.append(threading.current_thread().name)).start()
    ok.go.set()
    job.result()
    assert ran == ["bpf-compile"]
    failing = LoaderStandIn(RuntimeError("no"))
    job = compile_with(failing, lambda: ran.append("after a failure")).start()
    failing.go.set()
    with pytest.raises(RuntimeError):
        job.result()
    assert ran == ["bpf-compile"]


def test_wait_never_raises_and_waits_for_the_end() -> None:
    loader = LoaderStandIn(ValueError("bad"))
    job = compile_with(loader).start()
    threading.Timer(0.2, loader.go.set).start()
    t0 = time.monotonic()
    job.wait()
    assert time.monotonic() - t0 >= 0.15
    assert job.done
    assert job.finished_at >= job.started_at > 0


def test_wait_without_start_returns_at_once() -> None:
    job = compile_with(LoaderStandIn())
    job.wait()
    assert not job.done


def test_an_event_before_the_pipeline_exists_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before the pipeline was built"):
        not_started(object())
