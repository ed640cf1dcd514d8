"""One capacity replay in a fresh process; prints its result as JSON.

    python -m bench.replay_proc RECORDING.pickle ENDPOINT WORKDIR REPEAT CPU [profile]

The process pins itself to CPU first (every thread it starts inherits it). With ``HOSTAGENT_PURE=1``
in its environment the per-span stages run from their Python source instead of the compiled
modules (hostagent/compiled.py): ``bench.scenarios`` alternates the two on the same recording.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path


def main() -> int:
    recording, endpoint, workdir, repeat, cpu = sys.argv[1:6]
    os.sched_setaffinity(0, {int(cpu)})
    from bench import capacity
    from hostagent import compiled
    from hostagent.memory import freeze_start_up_objects

    with open(recording, "rb") as f:
        records = pickle.load(f)
    freeze_start_up_objects()  # as the daemon does once READY
    out = capacity.replay(Path(workdir), records, endpoint, repeat=int(repeat), profile=sys.argv[6:7] == ["profile"])
    out["stages"] = compiled.STATE
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
