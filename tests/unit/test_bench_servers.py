"""nginx's stub_status page read for the requests nginx read (the fidelity's expected spans)."""

from __future__ import annotations

import pytest

from bench.servers import stub_status_requests

# as nginx 1.22 (Debian) answered the bench's status server: 3 connections accepted, the read itself
# the first request
CAPTURED = "Active connections: 1 \nserver accepts handled requests\n 3 3 1 \nReading: 0 Writing: 1 Waiting: 0 \n"


@pytest.mark.parametrize(("body", "requests"), [
    (CAPTURED, 1),
    ("Active connections: 17 \nserver accepts handled requests\n 41 41 3141592 \nReading: 0 Writing: 17 "
     "Waiting: 0 \n", 3141592),
])
def test_the_requests_counter_is_read(body: str, requests: int) -> None:
    assert stub_status_requests(body) == requests


@pytest.mark.parametrize("body", [
    "",
    "<html><body>404 Not Found</body></html>\n",
    "Active connections: 1 \nserver accepts handled\n 3 3 \n",  # another layout: not guessed at
])
def test_anything_else_is_refused_with_what_was_read(body: str) -> None:
    with pytest.raises(ValueError, match="not an nginx stub_status page"):
        stub_status_requests(body)
