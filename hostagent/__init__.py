"""hostagent: eBPF capture of every network call on a host, exported as OpenTelemetry."""

from hostagent import compiled as _compiled

__version__ = "0.1.0"

_compiled.choose()  # compiled hot path or its source: see hostagent/compiled.py
