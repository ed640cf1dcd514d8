"""A recording whose client calls a local server: the replay runs the client path too.

    sudo .venv/bin/python -m bench.record_local_client OUT.pickle [REQUESTS] [PORT]

``capacity.record``'s server listened before the probes were attached and is gone by the replay:
no replay of it resolves a local peer for wrk's CLIENT spans (``PeerResolver.attributes_for``'s
answer, half the spans where a local client calls a local server). Here the probes are attached
before gunicorn (Flask, one sync worker) starts, so its LISTEN event is in the recording (the
replay's ListenEvents learns the listener),
and a blocking Python client makes ``REQUESTS`` requests, a new connection each. The records are
cut to the server's and the client's pids, remapped to live ``sleep`` processes (identity finds a
live process, as in the daemon); their pids are printed: kill them when the replays are done.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import capacity
from bench.servers import gunicorn
from hostagent.probes import events as ev

CLIENT = """import http.client, sys
for i in range(int(sys.argv[1])):
    c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[2]))
    c.request("GET", "/")
    c.getresponse().read()
    c.close()
print(i + 1)
"""


def record(requests: int, port: int, workdir: Path) -> tuple[list[bytes], set[int], int]:
    """(records, the server's pids, the client's pid)."""
    with capacity.raw_recording(workdir) as (records, _):
        server = gunicorn(port, "0")
        try:
            time.sleep(0.5)  # its worker forked
            children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout
            server_pids = {server.pid} | {int(p) for p in children.split()}
            client = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", CLIENT, str(requests), str(port)],
                                      stdout=subprocess.PIPE, text=True)
            done = int(client.communicate()[0])
        finally:
            server.stop()
    print(f"{done} requests; server pids {sorted(server_pids)}, client {client.pid}")
    return records, server_pids, client.pid


def main() -> int:
    out = Path(sys.argv[1])
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 25002
    workdir = out.parent / (out.stem + "-work")
    workdir.mkdir(parents=True, exist_ok=True)
    records, server_pids, client = record(requests, port, workdir)
    keep = server_pids | {client}
    cut = [r for r in records if int.from_bytes(r[24:28], "little") in keep]
    kinds: dict[str, int] = {}
    for r in cut:
        name = ev.decode_at(r, 0, len(r)).kind.name
        kinds[name] = kinds.get(name, 0) + 1
    sleeps: dict[int, Any] = {
        pid: subprocess.Popen(["sleep", "7200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True).pid
        for pid in sorted(keep)
    }
    out.write_bytes(pickle.dumps(capacity.remap_pids(cut, sleeps)))
    print(f"{len(records)} records, {len(cut)} kept {kinds}; sleep pids (kill when done): "
          f"{' '.join(map(str, sleeps.values()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
