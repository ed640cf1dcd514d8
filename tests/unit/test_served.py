"""ServedEndpoints: which process serves a launcher's listener, as the listener table asks it."""

from __future__ import annotations

from typing import Optional

import pytest

from hostagent.identity.served import ServedEndpoints

WEB = ("127.0.0.1", 8080)
SSH = ("127.0.0.1", 2222)
LAUNCHER, SERVER, NEXT, OTHER = 1, 100, 101, 200


@pytest.mark.parametrize(
    ("holder", "first", "taken"),
    [
        (LAUNCHER, None, True),  # the table names the launcher: its server takes the endpoint
        (OTHER, None, False),  # the table names someone else now (the listener changed hands)
        (SERVER, (SERVER, LAUNCHER), True),  # a server of the same launcher is named: the next one takes it
        (SERVER, (SERVER, OTHER), False),  # a server of another launcher's
    ],
)
def test_take(holder: int, first: Optional[tuple[int, int]], taken: bool) -> None:
    served = ServedEndpoints()
    if first is not None:
        assert served.take(WEB, first[0], first[1], first[1], "hello")
    assert (served.take(WEB, NEXT, LAUNCHER, holder, "hello"), served.launcher_of(WEB)) == (
        taken, LAUNCHER if taken else (first[1] if first else None))


def test_the_bound_refuses_new_endpoints_only() -> None:
    served = ServedEndpoints(bound=1)
    assert served.take(WEB, SERVER, LAUNCHER, LAUNCHER, None)
    assert not served.take(SSH, SERVER, LAUNCHER, LAUNCHER, None)
    assert served.take(WEB, NEXT, LAUNCHER, SERVER, None)


@pytest.mark.parametrize(
    ("service", "given_back"),
    [
        (None, {WEB: LAUNCHER}),  # a server that accepted (Accept=no): its launcher is named again
        ("hello", {}),  # a per-connection server: the next connection goes to another of its service
    ],
)
def test_exited(service: Optional[str], given_back: dict[tuple[str, int], int]) -> None:
    served = ServedEndpoints()
    served.take(WEB, SERVER, LAUNCHER, LAUNCHER, service)
    assert (served.exited(OTHER), served.exited(SERVER)) == ({}, given_back)
    assert served.service_of(SERVER) == service


@pytest.mark.parametrize(
    ("refreshed", "after"),
    [
        ({WEB: LAUNCHER}, {WEB: SERVER}),  # the refresh found the launcher holding the listener
        ({WEB: SERVER}, {WEB: SERVER}),
        ({WEB: OTHER}, {WEB: OTHER}),  # another process's listener now: the server is dropped
        ({}, {}),  # closed
    ],
)
def test_keep(refreshed: dict[tuple[str, int], int], after: dict[tuple[str, int], int]) -> None:
    served = ServedEndpoints()
    served.take(WEB, SERVER, LAUNCHER, LAUNCHER, "hello")
    served.keep(refreshed)
    kept = refreshed.get(WEB) in (SERVER, LAUNCHER)
    assert (refreshed, served.service_of(SERVER), served.launchers()) == (
        after, "hello" if kept else None, {LAUNCHER} if kept else set())


def test_forget() -> None:
    """A new socket on the endpoint (a LISTEN event): what was served on the old one is past."""
    served = ServedEndpoints()
    served.take(WEB, SERVER, LAUNCHER, LAUNCHER, "hello")
    served.forget(WEB)
    assert (served.launcher_of(WEB), served.service_of(SERVER)) == (None, None)
