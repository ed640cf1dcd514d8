"""The SDK's OTLP/gRPC span exporter sending requests that OtlpTraceEncoder (otlp_fast) encoded.

Apart from the encoder so that the encoder can be compiled (setup.py): mypyc does not compile the
classes nested in this function, which subclass the SDK's exporter where it is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from hostagent.export.otlp_fast import OtlpTraceEncoder
from hostagent.yielding import CpuYield


def grpc_span_exporter(encoded: bool = False, **kwargs: Any) -> Any:
    """The SDK's OTLP/gRPC span exporter (its channel, TLS, headers, compression, retries and
    backoff unchanged) sending requests encoded by OtlpTraceEncoder as raw bytes.

    ``encoded``: ``export`` is given requests already encoded (an object with ``payload`` bytes and
    the span count as its ``len``), as the export process (hostagent.export.child) is."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    class _RawStub:
        def __init__(self, channel: Any) -> None:
            self.Export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=None,  # the request is already bytes
                response_deserializer=ExportTraceServiceResponse.FromString,
            )

    class FastOTLPSpanExporter(OTLPSpanExporter):  # type: ignore[misc]
        def __init__(self, **kw: Any) -> None:
            self._encoder = None if encoded else OtlpTraceEncoder(pause=CpuYield())
            super().__init__(**kw)

        def _initialize_channel_and_stub(self) -> None:
            super()._initialize_channel_and_stub()
            self._client = _RawStub(self._channel)  # type: ignore[assignment]

        def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
            if self._encoder is None:
                return data.payload  # type: ignore[attr-defined,no-any-return]
            return self._encoder.encode(data)  # called once per attempt; retries are rare

    return FastOTLPSpanExporter(**kwargs)
