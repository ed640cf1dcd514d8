"""hostagent: eBPF capture of every network call on a host, exported as OpenTelemetry."""

__version__ = "0.1.0"
