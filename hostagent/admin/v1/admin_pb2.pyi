from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProbeState(_message.Message):
    __slots__ = ("name", "enabled", "state", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    enabled: bool
    state: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., enabled: _Optional[bool] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("version", "uptime_seconds", "kernel_release", "kernel_headers", "probes", "events_per_second", "spans_exported", "drops", "exporter_endpoint", "exporter_last_error", "sampling", "redaction", "redacted", "settings_generation", "healthy", "runtime_overrides", "capture", "layering", "cpu_effort", "connections")
    class DropsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class RedactedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ConnectionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_RELEASE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_HEADERS_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SPANS_EXPORTED_FIELD_NUMBER: _ClassVar[int]
    DROPS_FIELD_NUMBER: _ClassVar[int]
    EXPORTER_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    EXPORTER_LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    REDACTION_FIELD_NUMBER: _ClassVar[int]
    REDACTED_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_GENERATION_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    LAYERING_FIELD_NUMBER: _ClassVar[int]
    CPU_EFFORT_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    version: str
    uptime_seconds: float
    kernel_release: str
    kernel_headers: str
    probes: _containers.RepeatedCompositeFieldContainer[ProbeState]
    events_per_second: float
    spans_exported: int
    drops: _containers.ScalarMap[str, int]
    exporter_endpoint: str
    exporter_last_error: str
    sampling: Sampling
    redaction: Redaction
    redacted: _containers.ScalarMap[str, int]
    settings_generation: int
    healthy: bool
    runtime_overrides: bool
    capture: Capture
    layering: Layering
    cpu_effort: str
    connections: _containers.ScalarMap[str, int]
    def __init__(self, version: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., kernel_release: _Optional[str] = ..., kernel_headers: _Optional[str] = ..., probes: _Optional[_Iterable[_Union[ProbeState, _Mapping]]] = ..., events_per_second: _Optional[float] = ..., spans_exported: _Optional[int] = ..., drops: _Optional[_Mapping[str, int]] = ..., exporter_endpoint: _Optional[str] = ..., exporter_last_error: _Optional[str] = ..., sampling: _Optional[_Union[Sampling, _Mapping]] = ..., redaction: _Optional[_Union[Redaction, _Mapping]] = ..., redacted: _Optional[_Mapping[str, int]] = ..., settings_generation: _Optional[int] = ..., healthy: _Optional[bool] = ..., runtime_overrides: _Optional[bool] = ..., capture: _Optional[_Union[Capture, _Mapping]] = ..., layering: _Optional[_Union[Layering, _Mapping]] = ..., cpu_effort: _Optional[str] = ..., connections: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Layering(_message.Message):
    __slots__ = ("receiver_enabled", "linking_enabled", "sdk_requests_received", "sdk_spans_received", "sdk_spans_enriched", "duplicates_dropped", "sdk_spans_held", "agent_spans_held", "requests_forwarded", "hold_overflow", "thread_links", "peer_links", "counters")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RECEIVER_ENABLED_FIELD_NUMBER: _ClassVar[int]
    LINKING_ENABLED_FIELD_NUMBER: _ClassVar[int]
    SDK_REQUESTS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    SDK_SPANS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    SDK_SPANS_ENRICHED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    SDK_SPANS_HELD_FIELD_NUMBER: _ClassVar[int]
    AGENT_SPANS_HELD_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FORWARDED_FIELD_NUMBER: _ClassVar[int]
    HOLD_OVERFLOW_FIELD_NUMBER: _ClassVar[int]
    THREAD_LINKS_FIELD_NUMBER: _ClassVar[int]
    PEER_LINKS_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    receiver_enabled: bool
    linking_enabled: bool
    sdk_requests_received: int
    sdk_spans_received: int
    sdk_spans_enriched: int
    duplicates_dropped: int
    sdk_spans_held: int
    agent_spans_held: int
    requests_forwarded: int
    hold_overflow: int
    thread_links: int
    peer_links: int
    counters: _containers.ScalarMap[str, int]
    def __init__(self, receiver_enabled: _Optional[bool] = ..., linking_enabled: _Optional[bool] = ..., sdk_requests_received: _Optional[int] = ..., sdk_spans_received: _Optional[int] = ..., sdk_spans_enriched: _Optional[int] = ..., duplicates_dropped: _Optional[int] = ..., sdk_spans_held: _Optional[int] = ..., agent_spans_held: _Optional[int] = ..., requests_forwarded: _Optional[int] = ..., hold_overflow: _Optional[int] = ..., thread_links: _Optional[int] = ..., peer_links: _Optional[int] = ..., counters: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ListProbesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProbesResponse(_message.Message):
    __slots__ = ("probes",)
    PROBES_FIELD_NUMBER: _ClassVar[int]
    probes: _containers.RepeatedCompositeFieldContainer[ProbeState]
    def __init__(self, probes: _Optional[_Iterable[_Union[ProbeState, _Mapping]]] = ...) -> None: ...

class SetProbeEnabledRequest(_message.Message):
    __slots__ = ("name", "enabled")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    name: str
    enabled: bool
    def __init__(self, name: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class Override(_message.Message):
    __slots__ = ("name", "ratio")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    name: str
    ratio: float
    def __init__(self, name: _Optional[str] = ..., ratio: _Optional[float] = ...) -> None: ...

class Sampling(_message.Message):
    __slots__ = ("ratio", "per_service", "per_protocol", "keep_errors", "keep_slower_than_ms")
    RATIO_FIELD_NUMBER: _ClassVar[int]
    PER_SERVICE_FIELD_NUMBER: _ClassVar[int]
    PER_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    KEEP_ERRORS_FIELD_NUMBER: _ClassVar[int]
    KEEP_SLOWER_THAN_MS_FIELD_NUMBER: _ClassVar[int]
    ratio: float
    per_service: _containers.RepeatedCompositeFieldContainer[Override]
    per_protocol: _containers.RepeatedCompositeFieldContainer[Override]
    keep_errors: bool
    keep_slower_than_ms: float
    def __init__(self, ratio: _Optional[float] = ..., per_service: _Optional[_Iterable[_Union[Override, _Mapping]]] = ..., per_protocol: _Optional[_Iterable[_Union[Override, _Mapping]]] = ..., keep_errors: _Optional[bool] = ..., keep_slower_than_ms: _Optional[float] = ...) -> None: ...

class GetSamplingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetSamplingRequest(_message.Message):
    __slots__ = ("ratio", "service", "protocol", "clear_override", "keep_errors", "keep_slower_than_ms")
    RATIO_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CLEAR_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    KEEP_ERRORS_FIELD_NUMBER: _ClassVar[int]
    KEEP_SLOWER_THAN_MS_FIELD_NUMBER: _ClassVar[int]
    ratio: float
    service: str
    protocol: str
    clear_override: bool
    keep_errors: bool
    keep_slower_than_ms: float
    def __init__(self, ratio: _Optional[float] = ..., service: _Optional[str] = ..., protocol: _Optional[str] = ..., clear_override: _Optional[bool] = ..., keep_errors: _Optional[bool] = ..., keep_slower_than_ms: _Optional[float] = ...) -> None: ...

class RedactionRule(_message.Message):
    __slots__ = ("name", "pattern", "mode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    pattern: str
    mode: str
    def __init__(self, name: _Optional[str] = ..., pattern: _Optional[str] = ..., mode: _Optional[str] = ...) -> None: ...

class Redaction(_message.Message):
    __slots__ = ("pii_detection", "mode", "rules", "detectors")
    PII_DETECTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    DETECTORS_FIELD_NUMBER: _ClassVar[int]
    pii_detection: bool
    mode: str
    rules: _containers.RepeatedCompositeFieldContainer[RedactionRule]
    detectors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pii_detection: _Optional[bool] = ..., mode: _Optional[str] = ..., rules: _Optional[_Iterable[_Union[RedactionRule, _Mapping]]] = ..., detectors: _Optional[_Iterable[str]] = ...) -> None: ...

class ListRedactionRulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddRedactionRuleRequest(_message.Message):
    __slots__ = ("rule",)
    RULE_FIELD_NUMBER: _ClassVar[int]
    rule: RedactionRule
    def __init__(self, rule: _Optional[_Union[RedactionRule, _Mapping]] = ...) -> None: ...

class RemoveRedactionRuleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SetPiiDetectionRequest(_message.Message):
    __slots__ = ("enabled", "mode")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    mode: str
    def __init__(self, enabled: _Optional[bool] = ..., mode: _Optional[str] = ...) -> None: ...

class TestRedactionRequest(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class TestRedactionResponse(_message.Message):
    __slots__ = ("text", "found")
    class FoundEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    text: str
    found: _containers.ScalarMap[str, int]
    def __init__(self, text: _Optional[str] = ..., found: _Optional[_Mapping[str, int]] = ...) -> None: ...

class TailSpansRequest(_message.Message):
    __slots__ = ("service", "protocol", "status", "min_duration_ms")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MIN_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    service: str
    protocol: str
    status: str
    min_duration_ms: float
    def __init__(self, service: _Optional[str] = ..., protocol: _Optional[str] = ..., status: _Optional[str] = ..., min_duration_ms: _Optional[float] = ...) -> None: ...

class SpanSummary(_message.Message):
    __slots__ = ("trace_id", "span_id", "name", "service", "protocol", "kind", "start_unix_nano", "duration_ms", "status", "error_type", "peer", "attributes", "dropped_before")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    span_id: str
    name: str
    service: str
    protocol: str
    kind: str
    start_unix_nano: int
    duration_ms: float
    status: str
    error_type: str
    peer: str
    attributes: _containers.ScalarMap[str, str]
    dropped_before: int
    def __init__(self, trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., name: _Optional[str] = ..., service: _Optional[str] = ..., protocol: _Optional[str] = ..., kind: _Optional[str] = ..., start_unix_nano: _Optional[int] = ..., duration_ms: _Optional[float] = ..., status: _Optional[str] = ..., error_type: _Optional[str] = ..., peer: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., dropped_before: _Optional[int] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("ok", "error", "settings_generation")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_GENERATION_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    error: str
    settings_generation: int
    def __init__(self, ok: _Optional[bool] = ..., error: _Optional[str] = ..., settings_generation: _Optional[int] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResetResponse(_message.Message):
    __slots__ = ("reset", "settings_generation")
    RESET_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_GENERATION_FIELD_NUMBER: _ClassVar[int]
    reset: _containers.RepeatedScalarFieldContainer[str]
    settings_generation: int
    def __init__(self, reset: _Optional[_Iterable[str]] = ..., settings_generation: _Optional[int] = ...) -> None: ...

class CaptureOverride(_message.Message):
    __slots__ = ("service", "protocol", "headers", "bodies", "body_max_bytes")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODIES_FIELD_NUMBER: _ClassVar[int]
    BODY_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    service: str
    protocol: str
    headers: bool
    bodies: bool
    body_max_bytes: int
    def __init__(self, service: _Optional[str] = ..., protocol: _Optional[str] = ..., headers: _Optional[bool] = ..., bodies: _Optional[bool] = ..., body_max_bytes: _Optional[int] = ...) -> None: ...

class Capture(_message.Message):
    __slots__ = ("headers", "bodies", "body_max_bytes", "raw_sql", "overrides")
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODIES_FIELD_NUMBER: _ClassVar[int]
    BODY_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAW_SQL_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    headers: bool
    bodies: bool
    body_max_bytes: int
    raw_sql: bool
    overrides: _containers.RepeatedCompositeFieldContainer[CaptureOverride]
    def __init__(self, headers: _Optional[bool] = ..., bodies: _Optional[bool] = ..., body_max_bytes: _Optional[int] = ..., raw_sql: _Optional[bool] = ..., overrides: _Optional[_Iterable[_Union[CaptureOverride, _Mapping]]] = ...) -> None: ...

class GetCaptureRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetCaptureRequest(_message.Message):
    __slots__ = ("headers", "bodies", "body_max_bytes", "raw_sql", "service", "protocol", "clear_override")
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODIES_FIELD_NUMBER: _ClassVar[int]
    BODY_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    RAW_SQL_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CLEAR_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    headers: bool
    bodies: bool
    body_max_bytes: int
    raw_sql: bool
    service: str
    protocol: str
    clear_override: bool
    def __init__(self, headers: _Optional[bool] = ..., bodies: _Optional[bool] = ..., body_max_bytes: _Optional[int] = ..., raw_sql: _Optional[bool] = ..., service: _Optional[str] = ..., protocol: _Optional[str] = ..., clear_override: _Optional[bool] = ...) -> None: ...
