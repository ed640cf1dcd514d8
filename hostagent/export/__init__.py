"""hostagent.export: getting spans off the host.

- ``queue``: ``ExportQueue``, the bounded non-blocking hand-off with batching, retries and counts.
- ``otlp``: OTLP span/metric exporters (gRPC or HTTP/protobuf) from explicit settings.
- ``console``: one line per span for humans; ``memory``: keeps spans, for tests.
All exporters follow OpenTelemetry's SpanExporter contract (export / shutdown / force_flush).
"""
