"""read_fdinfo: the key/value lines of /proc/<pid>/fdinfo/<fd>, as the loader and ring reader use them."""

from __future__ import annotations

import os

import pytest

from hostagent.probes.fdinfo import read_fdinfo


def test_a_pipe_fd_gives_its_position_and_flags_with_values_stripped() -> None:
    r, w = os.pipe()
    try:
        info = read_fdinfo(r)
        assert info["pos"] == "0"
        assert int(info["flags"], 8) & os.O_ACCMODE == os.O_RDONLY
        assert "max_entries" not in info  # not a BPF map
    finally:
        os.close(r)
        os.close(w)


def test_an_fd_that_is_not_open_raises() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError):
        read_fdinfo(r)
