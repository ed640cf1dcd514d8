"""hostagent.traces: Calls -> OpenTelemetry spans.

- ``clock``: kernel CLOCK_MONOTONIC ns -> Unix ns (``MonotonicToUnix``).
- ``ids``: span/trace ids, W3C traceparent parsing.
- ``spans``: ``SpanBuilder.build(call) -> SpanRecord`` with exact ids, times and context.
- ``record``: ``SpanRecord``, the compiled span record with the read API of the SDK's ReadableSpan.
"""
