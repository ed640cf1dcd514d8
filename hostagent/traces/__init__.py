"""hostagent.traces: Calls -> OpenTelemetry spans.

- ``clock``: kernel CLOCK_MONOTONIC ns -> Unix ns (``MonotonicToUnix``).
- ``ids``: span/trace ids, W3C traceparent parsing.
- ``spans``: ``SpanBuilder.build(call) -> ReadableSpan`` with exact ids, times and context.
"""
