"""bench/run.py's arguments: a misspelt measurement or a zero is an error before minutes of load,
never a run that measures nothing and writes an empty report."""

from __future__ import annotations

import pytest

from bench import run


def test_defaults_run_everything_and_quick_leaves_out_the_databases() -> None:
    assert run.parse_args([]).only == frozenset(run.ALL)
    assert run.parse_args(["--quick"]).only == frozenset(run.ALL) - {"db"}


@pytest.mark.parametrize("argv, only", [
    (["--only", "overhead"], {"overhead"}),
    (["--only", "overhead, fidelity"], {"overhead", "fidelity"}),
    (["--quick", "--only", "db"], {"db"}),  # named explicitly: run even in a quick run
])
def test_only_takes_what_it_names(argv: list[str], only: set[str]) -> None:
    assert run.parse_args(argv).only == only


@pytest.mark.parametrize("argv, message", [
    (["--only", "overheads"], "unknown measurement overheads: choose from overhead, fidelity"),
    (["--only", ","], "unknown measurement ','"),
    (["--rounds", "0"], "--rounds: expected a positive int, got '0'"),
    (["--rounds", "two"], "--rounds: expected a positive int, got 'two'"),
    (["--seconds", "-3"], "--seconds: expected a positive float, got '-3'"),
])
def test_bad_arguments_are_refused_with_what_was_expected(argv: list[str], message: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run.parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
