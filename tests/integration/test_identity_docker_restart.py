"""The Docker event stream survives the engine going away and coming back.

Uses a private dockerd (own socket, data and exec roots under tmp_path) so that stopping it
disturbs no other test or process using the machine's engine.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import pytest

from hostagent.identity.docker import DockerClient, DockerMetadata
from tests.support.docker_engine import DockerEngine
from tests.support.otlp_receiver import wait_until

pytestmark = [pytest.mark.root, pytest.mark.docker]


def test_event_stream_reconnects_after_engine_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = DockerEngine(private_dir=str(tmp_path))
    engine.start()
    metadata = DockerMetadata(DockerClient(engine.socket_path), backoff_initial=0.1, backoff_max=0.5)
    changes: list[Optional[str]] = []
    metadata.subscribe(changes.append)
    caplog.set_level(logging.INFO, logger="hostagent.identity.docker")
    try:
        metadata.start()
        assert metadata.connected.wait(10)

        engine.stop()
        assert wait_until(lambda: not metadata.connected.is_set(), 10, interval=0.05)
        assert metadata.get("0" * 64) is None  # no exception while the engine is down
        time.sleep(1.5)  # several reconnect attempts at 0.1-0.5 s backoff...
        outage_logs = [r for r in caplog.records if "not answering" in r.getMessage()]
        assert len(outage_logs) == 1  # ...logged once

        engine.start()
        assert metadata.connected.wait(15)
        assert None in changes  # "anything may have changed": caches re-read after the gap

        # The new stream delivers events: a rename on the restarted engine reaches the cache.
        image = engine.ensure_busybox_image()
        container_id = engine.cli("create", "--network", "none", "--name", "hostagent-id-r1", image, "sleep", "1")
        assert metadata.get(container_id).name == "hostagent-id-r1"  # type: ignore[union-attr]
        engine.cli("rename", "hostagent-id-r1", "hostagent-id-r2")
        assert wait_until(lambda: container_id in changes, 3, interval=0.05)
        assert metadata.get(container_id).name == "hostagent-id-r2"  # type: ignore[union-attr]
    finally:
        metadata.stop()
        engine.remove("hostagent-id-r1", "hostagent-id-r2")
        engine.stop()
