"""Optional compiled build of the per-span hot path (mypyc); everything else is in pyproject.toml.

    HOSTAGENT_COMPILE=1 python setup.py build_ext --inplace   # make compile (make setup runs it)
    HOSTAGENT_COMPILE=1 pip wheel --no-build-isolation .       # packaging/build.sh: a CPython-specific wheel

Without HOSTAGENT_COMPILE the project builds as pure Python, as before. The compiled modules are
the same source files compiled to C by mypyc (the project is mypy-clean): 1.7x fewer CPU
seconds per span in the capacity replay (bench/README.md). hostagent/compiled.py decides at import
whether the compiled modules are used (not when older than their source, not with HOSTAGENT_PURE=1).
"""

import os

from setuptools import setup

# The stages every captured call goes through, and the records they pass on (model.py); and what
# they call per span or per event (identity's listener events, peer and own-socket lookups, the
# telemetry check, ids, the Resources' redaction), and the ring walk that hands them each record with
# the pacing between its steps (probes/ring.py, yielding.py), so that no interpreted call is left on that
# path (an interpreted call from compiled code costs a frame and boxing). Left out
# on purpose: probes/events.py (ctypes: mypyc 1.19 emits C that does not build; its decoder is
# probes/decode.py), export/otlp_grpc.py (nested classes are not supported). A compiled class
# has a fixed set of attributes: nothing may add one from outside.
# (An attribute named ``_thread`` makes C that does not build: ``__thread`` is a C keyword.)
COMPILED = [
    "hostagent/capture/state.py",
    "hostagent/capture/tracker.py",
    "hostagent/export/otlp_fast.py",
    "hostagent/export/queue.py",
    "hostagent/identity/listen_events.py",
    "hostagent/identity/own_sockets.py",
    "hostagent/identity/peers.py",
    "hostagent/metrics/histograms.py",
    "hostagent/metrics/red.py",
    "hostagent/model.py",
    "hostagent/pipeline.py",
    "hostagent/probes/decode.py",
    "hostagent/probes/ring.py",
    "hostagent/policy/redaction.py",
    "hostagent/policy/resource_redaction.py",
    "hostagent/policy/telemetry.py",
    "hostagent/protocols/http1.py",
    "hostagent/protocols/http1_head.py",
    "hostagent/protocols/http_common.py",
    "hostagent/traces/clock.py",
    "hostagent/traces/ids.py",
    "hostagent/traces/linking.py",
    "hostagent/traces/record.py",
    "hostagent/traces/sdk_records.py",
    "hostagent/traces/spans.py",
    "hostagent/traces/wire.py",
    "hostagent/yielding.py",
]

ext_modules = []
if os.environ.get("HOSTAGENT_COMPILE") == "1":
    from mypyc.build import mypycify

    # group_name puts the shared runtime library inside the package (hostagent/_hot__mypyc.*.so)
    ext_modules = mypycify(COMPILED, group_name="hostagent._hot", opt_level="3")

setup(ext_modules=ext_modules)
