"""A fast OTLP trace encoder: ReadableSpans -> ExportTraceServiceRequest bytes, by hand.

Why: opentelemetry-exporter-otlp builds one protobuf object per span, per attribute and per value
(``PB2KeyValue(key=..., value=PB2AnyValue(...))``) and then serialises them; in the agent that was
the largest single cost per span (~150 us on the 2-core bench machine, more than capturing and
parsing the call). The agent's spans repeat almost everything: the Resource and scope of a
process, and most attribute pairs (method, scheme, server address and port, status code,
user agent, peer address). So this encoder writes the protobuf wire format directly and caches
the encoded bytes of each Resource and of each (key, value) attribute pair; per span only the ids,
times, name and the few unique values are encoded.

Output is the same message as the SDK encoder's (test_otlp_fast compares the two decoded
requests field by field), including span flags and the status; events and links, which the
agent never produces, are encoded too so that any ReadableSpan is handled.

Wire format: https://protobuf.dev/programming-guides/encoding/ ; the messages are those of
opentelemetry/proto/trace/v1/trace.proto and collector/trace/v1/trace_service.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final, Optional

from opentelemetry.sdk.trace import ReadableSpan

from hostagent.traces.record import SpanRecord

# Final: compiled, a module constant is a C static, not a lookup in the module's dict at each use
_pack_q: Final = struct.Struct("<Q").pack
_pack_d: Final = struct.Struct("<d").pack
_pack_i: Final = struct.Struct("<I").pack

CACHE_MAX: Final = 16384  # encoded attribute pairs kept (cleared when full: bounded memory)
RESOURCE_CACHE_MAX: Final = 1024

# Span.flags: SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK (0x100) | IS_REMOTE (0x200) when the parent is remote
_FLAGS_LOCAL: Final = 0x100
_FLAGS_REMOTE: Final = 0x300
_FLAGS_FIELD_LOCAL: Final = b"\x85\x01" + _pack_i(_FLAGS_LOCAL)  # Span.flags = 16 (fixed32)
_FLAGS_FIELD_REMOTE: Final = b"\x85\x01" + _pack_i(_FLAGS_REMOTE)
_PLAIN: Final = (tuple, list)  # event/link containers that cannot have dropped anything


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 negatives are ten-byte two's complement varints
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL: Final = [_varint(i) for i in range(16384)]


def _len(n: int) -> bytes:
    return _SMALL[n] if n < 16384 else _varint(n)


def _field_bytes(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2); ``tag`` is (field_number << 3) | 2, one byte here."""
    return bytes((tag,)) + _len(len(payload)) + payload


def _str(tag: int, value: str) -> bytes:
    return _field_bytes(tag, value.encode("utf-8"))


def _any_value(value: Any) -> bytes:
    """An AnyValue message (without its own tag)."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"  # bool_value = 2 (varint)
    if isinstance(value, str):
        return _str(0x0A, value)  # string_value = 1
    if isinstance(value, int):
        return b"\x18" + _varint(value)  # int_value = 3 (int64 varint)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)  # double_value = 4 (fixed64)
    if isinstance(value, bytes):
        return _field_bytes(0x3A, value)  # bytes_value = 7
    if isinstance(value, Sequence):
        return _field_bytes(0x2A, b"".join(_field_bytes(0x0A, _any_value(v)) for v in value))  # array_value = 5
    if isinstance(value, Mapping):
        return _field_bytes(0x32, b"".join(_field_bytes(0x0A, _key_value(str(k), v))
                                           for k, v in value.items()))  # kvlist_value = 6
    if value is None:
        return b""
    raise TypeError(f"cannot encode attribute value of type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    """A KeyValue message: key = 1, value = 2."""
    return _str(0x0A, key) + _field_bytes(0x12, _any_value(value))


def _events(parts: list[bytes], events: Sequence[Any]) -> None:
    """Each event as a Span ``events`` field (tag 11), appended to ``parts``."""
    for event in events:
        body = _str(0x12, event.name) if event.name else b""
        body = b"\x09" + _pack_q(event.timestamp) + body  # time_unix_nano = 1 (fixed64)
        for k, v in (event.attributes or {}).items():
            body += _field_bytes(0x1A, _key_value(k, v))
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        parts.append(_field_bytes(0x5A, body))


def _links(parts: list[bytes], links: Sequence[Any]) -> None:
    """Each link as a Span ``links`` field (tag 13), appended to ``parts``."""
    for link in links:
        lc = link.context
        body = b"\x0a\x10" + lc.trace_id.to_bytes(16, "big") + b"\x12\x08" + lc.span_id.to_bytes(8, "big")
        for k, v in (link.attributes or {}).items():
            body += _field_bytes(0x22, _key_value(k, v))  # Link.attributes = 4
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)  # = 5
        body += b"\x35" + _pack_i(_FLAGS_REMOTE if lc.is_remote else _FLAGS_LOCAL)
        parts.append(_field_bytes(0x6A, body))


# The Span's fixed-size fields packed at once: trace_id (1, its 16 bytes from int.to_bytes: one
# conversion of the 128-bit int instead of two shifts and two) and span_id (2), bytes, big-endian;
# with parent_span_id (4) when no trace state (3) comes between; kind (6, one-byte varint) and the
# start and end times (7, 8: fixed64, little-endian).
_pack_ids: Final = struct.Struct(">2s16s2sQ").pack
_pack_ids_parent: Final = struct.Struct(">2s16s2sQ2sQ").pack
_pack_times: Final = struct.Struct("<BBBQBQ").pack
NAME_CACHE_MAX: Final = 4096


def _head(parts: list[bytes], names: dict[str, bytes], trace_id: int, span_id: int, state: Any,
          parent_id: int, name: str, otlp_kind: int, start: int, end: int) -> int:
    """A Span message's fields up to its attributes, appended to ``parts``: ids, trace state
    (None: empty), parent (``parent_id`` -1: none), name (its field cached in ``names``), kind,
    times. Returns their length."""
    tid = trace_id.to_bytes(16, "big")
    if state is not None:
        ids = _pack_ids(b"\x0a\x10", tid, b"\x12\x08", span_id)
        text = _str(0x1A, ",".join(f"{k}={v}" for k, v in state.items()))
        parts += (ids, text)
        size = len(ids) + len(text)
        if parent_id >= 0:
            parts.append(b"\x22\x08" + parent_id.to_bytes(8, "big"))
            size += 10
    elif parent_id >= 0:
        parts.append(_pack_ids_parent(b"\x0a\x10", tid, b"\x12\x08", span_id, b"\x22\x08", parent_id))
        size = 38  # 2 + 16 + 2 + 8 + 2 + 8
    else:
        parts.append(_pack_ids(b"\x0a\x10", tid, b"\x12\x08", span_id))
        size = 28
    if name:
        field = names.get(name)
        if field is None:
            if len(names) >= NAME_CACHE_MAX:
                names.clear()
            field = names[name] = _str(0x2A, name)
        parts.append(field)
        size += len(field)
    # kind: one byte (OTLP kinds are 0-5, one-byte varints)
    parts.append(_pack_times(0x30, otlp_kind, 0x39, start, 0x41, end))
    return size + 20  # 1 + 1 + 1 + 8 + 1 + 8


def _all_str(values: tuple[Any, ...]) -> bool:
    for v in values:
        if v.__class__ is not str:
            return False
    return True


class OtlpTraceEncoder:
    """``encode(spans) -> bytes`` of an ExportTraceServiceRequest. One per exporter (its caches);
    used from the export thread only."""

    def __init__(self, pause: Optional[Any] = None) -> None:
        # called every 64 spans (hostagent.yielding.CpuYield: the export thread yields its CPU
        # in the middle of a big batch); start() at each encode
        self.pause: Optional[Any] = pause
        self._pairs: dict[Any, bytes] = {}
        # key -> its str and int values and arrays of strings (a response header's values) -> their
        # encodings: the common pairs found with two lookups on objects whose hashes are already
        # known, instead of building and hashing a (key, value, type) tuple. "1" != 1, and
        # bool/float (True == 1 == 1.0) stay out.
        self._simple: dict[str, _Keyed] = {}
        self._simple_count = 0
        self._resources: dict[int, tuple[Any, bytes]] = {}  # id -> (the object itself, its encoding)
        self._scopes: dict[int, tuple[Any, bytes]] = {}
        # the last Status encoded and its field: the agent's spans share one unset Status (the SDK's
        # Status has no setters: its properties are read only)
        self._status: Any = None
        self._tails = (b"", b"")  # its field then the flags field: parent local, parent remote
        self._names: dict[str, bytes] = {}  # span name -> its field (the agent's names repeat)
        self._no_state: Any = None  # the last empty TraceState seen (the agent's spans share one)

    def attribute(self, key: str, value: Any) -> bytes:
        """One span attribute as a whole ``attributes`` field (tag 9) of a Span."""
        # The type is part of the key: True == 1 == 1.0 as dict keys, but they encode differently.
        # So are the types inside an array, which its own type does not give: (1,) == (True,); only
        # arrays of strings are cached (the parser's header values), any other array is encoded.
        cls = value.__class__
        cached = cls is not list and cls is not dict and (cls is not tuple or _all_str(value))
        k = (key, value, cls) if cached else None
        if k is not None:
            try:
                hit = self._pairs.get(k)
            except TypeError:  # an unhashable sequence inside a tuple
                hit, k = None, None
            if hit is not None:
                return hit
        enc = _field_bytes(0x4A, _key_value(key, value))
        if k is not None:
            if len(self._pairs) >= CACHE_MAX:
                self._pairs.clear()
            self._pairs[k] = enc
            if cls is str or cls is int or (cls is tuple and _all_str(value)):
                if self._simple_count >= CACHE_MAX:
                    self._simple.clear()
                    self._simple_count = 0
                keyed = self._simple.get(key)
                if keyed is None:
                    keyed = self._simple[key] = _Keyed()
                keyed.values[value] = enc
                keyed.last, keyed.last_enc = value, enc
                self._simple_count += 1
        return enc

    def _resource(self, resource: Any) -> bytes:
        """The ``resource`` field (tag 1) of a ResourceSpans, plus its schema_url (tag 3) apart."""
        hit = self._resources.get(id(resource))
        if hit is not None and hit[0] is resource:
            return hit[1]
        attrs = b"".join(_field_bytes(0x0A, _key_value(k, v)) for k, v in resource.attributes.items())
        enc = _field_bytes(0x0A, attrs)
        if len(self._resources) >= RESOURCE_CACHE_MAX:
            self._resources.clear()
        self._resources[id(resource)] = (resource, enc)  # holding it keeps its id from being reused
        return enc

    def _scope(self, scope: Any) -> bytes:
        """The ``scope`` field (tag 1) of a ScopeSpans."""
        hit = self._scopes.get(id(scope))
        if hit is not None and hit[0] is scope:
            return hit[1]
        if scope is None:
            enc = _field_bytes(0x0A, b"")
        else:
            body = b""
            if scope.name:
                body += _str(0x0A, scope.name)
            if scope.version:
                body += _str(0x12, scope.version)
            for k, v in (scope.attributes or {}).items():
                body += _field_bytes(0x1A, _key_value(k, v))
            enc = _field_bytes(0x0A, body)
        self._scopes[id(scope)] = (scope, enc)
        return enc

    def span(self, span: Any) -> bytes:
        """One Span message (without its own tag)."""
        parts: list[bytes] = []
        self._span_into(parts, span)
        return b"".join(parts)

    def _span_into(self, parts: list[bytes], span: Any) -> None:
        """One Span message (without its own tag), its pieces appended to ``parts``."""
        if isinstance(span, SpanRecord):
            self._record(parts, span)
            return
        if span.__class__ is ReadableSpan and "_context" in span.__dict__:
            # The SDK's own class: its fields read straight from the instance, not through ten
            # properties (``attributes`` wraps a MappingProxy, ``events``/``links`` copy to tuples).
            d = span.__dict__
            ctx, parent, name, kind = d["_context"], d["_parent"], d["_name"], d["_kind"]
            start, end, attrs, status = d["_start_time"], d["_end_time"], d["_attributes"], d["_status"]
            events, links = d["_events"], d["_links"]
        else:
            ctx, parent, name, kind = span.context, span.parent, span.name, span.kind
            start, end, attrs, events, links = span.start_time, span.end_time, span.attributes, span.events, span.links
            status = span.status
        # OTLP kinds are the SDK's + 1
        _head(parts, self._names, ctx.trace_id, ctx.span_id, self._state(ctx.trace_state),
              parent.span_id if parent is not None else -1, name, kind.value + 1, start or 0, end or 0)
        if attrs:
            if attrs.__class__ is dict:
                self._attributes(parts, attrs)
            else:
                self._attributes(parts, dict(attrs))
        # A plain dict / tuple / list has dropped nothing (the SDK's properties say 0 unless Bounded*).
        dropped = span.dropped_attributes if attrs.__class__ is not dict else 0
        if dropped:
            parts += (b"\x50", _varint(dropped))
        if events:
            _events(parts, events)
        dropped = span.dropped_events if events.__class__ not in _PLAIN else 0
        if dropped:
            parts += (b"\x60", _varint(dropped))
        if links:
            _links(parts, links)
        dropped = span.dropped_links if links.__class__ not in _PLAIN else 0
        if dropped:
            parts += (b"\x70", _varint(dropped))
        parts.append(self._tail(status, parent is not None and parent.is_remote))

    def _record(self, parts: list[bytes], span: SpanRecord) -> int:
        """``_span_into`` for the agent's own records: the same message, their fields read from the
        C struct (ids as ints, the OTLP kind), no SpanContext made. Nothing dropped (a plain dict and
        tuples). Returns the length of the pieces appended."""
        parent_id = span.parent_span_id  # 0: none
        size = _head(parts, self._names, span.trace_id, span.span_id, self._state(span.trace_state),
                     parent_id if parent_id else -1, span.name, span.otlp_kind, span.start_time, span.end_time)
        attrs = span.attrs
        if attrs:
            size += self._attributes(parts, attrs)
        if span.events or span.links:
            at = len(parts)
            if span.events:
                _events(parts, span.events)
            if span.links:
                _links(parts, span.links)
            for k in range(at, len(parts)):
                size += len(parts[k])
        tail = self._tail(span.status, bool(parent_id) and span.parent_remote)
        parts.append(tail)
        return size + len(tail)

    def _state(self, state: Any) -> Any:
        """``state`` when it has entries, else None. An empty TraceState is remembered by identity:
        its truth is an interpreted ``__len__`` (a TraceState never changes; a new one is made)."""
        if state is self._no_state:
            return None
        if not state:
            if state is not None:
                self._no_state = state  # held: its id cannot be reused
            return None
        return state

    def _attributes(self, parts: list[bytes], attrs: dict[str, Any]) -> int:
        """Each attribute as a Span ``attributes`` field (tag 9), appended to ``parts``; returns
        their length. The dict is walked natively (compiled: no item tuples). A value that is the
        very object last seen under its key (the wire stage hands on one header tuple per distinct
        head, the HTTP/1 parser one string per distinct method, path...) is found without hashing."""
        simple = self._simple
        size = 0
        for k, v in attrs.items():
            enc: Optional[bytes] = None
            keyed = simple.get(k)
            if keyed is not None:
                if v is keyed.last:
                    enc = keyed.last_enc
                else:
                    cls = type(v)
                    if cls is str or cls is int:
                        enc = keyed.values.get(v)
                    elif cls is tuple:
                        try:
                            enc = keyed.values.get(v)
                        except TypeError:  # an unhashable item: not cacheable
                            enc = None
                    if enc is not None:
                        keyed.last, keyed.last_enc = v, enc
            if enc is None:
                enc = self.attribute(k, v)
            parts.append(enc)
            size += len(enc)
        return size

    def _tail(self, status: Any, remote: bool) -> bytes:
        """The ``status`` field (tag 15) of a Span, always present as the SDK's, and its ``flags``
        (16): whether the parent is remote."""
        if status is not self._status:
            body = b""
            if status.description:
                body += _str(0x12, status.description)
            code = status.status_code.value
            if code:
                body += b"\x18" + _SMALL[code]
            field = b"\x7a" + _len(len(body)) + body
            self._status = status
            self._tails = (field + _FLAGS_FIELD_LOCAL, field + _FLAGS_FIELD_REMOTE)
        return self._tails[1] if remote else self._tails[0]

    def encode(self, spans: Sequence[Any]) -> bytes:
        """Spans grouped by Resource then scope, in first-seen order, as the SDK encoder does --
        except that Resources are grouped by object identity, not equality (hashing a Resource's
        attributes per span costs more than the encoding; the agent has one object per process).
        Two equal Resource objects give two ResourceSpans, which OTLP allows."""
        groups: dict[int, tuple[Any, dict[int, _Scoped]]] = {}
        pause = self.pause
        if pause is not None:
            pause.start()
        n = 0
        # the group of the span before: consecutive spans mostly share their Resource and scope
        last_res: Any = None
        last_scope: Any = None
        sg: Optional[_Scoped] = None
        for s in spans:
            n += 1
            if pause is not None and not n & 63:
                pause()
            # The same two reads in both branches, on purpose: compiled, the first (narrowed to a
            # SpanRecord) reads its struct; the second goes through the SDK's properties.
            if isinstance(s, SpanRecord):
                res, scope = s.resource, s.instrumentation_scope
            else:
                res, scope = s.resource, s.instrumentation_scope
            if sg is None or res is not last_res or scope is not last_scope:
                g = groups.get(id(res))
                if g is None:
                    g = groups[id(res)] = (res, {})  # holding res keeps its id from being reused
                sg = g[1].get(id(scope))
                if sg is None:
                    sg = g[1][id(scope)] = _Scoped(scope)
                last_res, last_scope = res, scope
            parts = sg.parts
            parts.append(b"\x12")  # ScopeSpans.spans = 2
            at = len(parts)
            parts.append(b"")  # the span's length, once its pieces are in
            if isinstance(s, SpanRecord):
                size = self._record(parts, s)
            else:
                self._span_into(parts, s)
                size = 0
                for k in range(at + 1, len(parts)):
                    size += len(parts[k])
            prefix = parts[at] = _len(size)
            sg.size += 1 + len(prefix) + size
        # The spans' pieces copied once, into the request: every length is summed, nothing joined first.
        out: list[bytes] = []
        for res, scopes in groups.values():
            resource = self._resource(res)
            rs_size = len(resource)
            heads: list[tuple[bytes, bytes, bytes]] = []
            for sg in scopes.values():
                scope_field = self._scope(sg.scope)
                schema = getattr(sg.scope, "schema_url", "") if sg.scope is not None else ""
                tail = _str(0x1A, schema) if schema else b""
                inner = len(scope_field) + sg.size + len(tail)
                prefix = _len(inner)
                rs_size += 1 + len(prefix) + inner
                heads.append((prefix, scope_field, tail))
            res_schema = _str(0x1A, res.schema_url) if res.schema_url else b""
            rs_size += len(res_schema)
            out += (b"\x0a", _len(rs_size), resource)  # ExportTraceServiceRequest.resource_spans = 1
            for (prefix, scope_field, tail), sg in zip(heads, scopes.values()):
                out += (b"\x12", prefix, scope_field)  # ResourceSpans.scope_spans = 2
                out += sg.parts
                if tail:
                    out.append(tail)
            if res_schema:
                out.append(res_schema)
        return b"".join(out)


_NOTHING: Final = object()  # no attribute value is this object


class _Keyed:
    """The cached encodings of one attribute key: by value, and the value found last (by identity)."""

    def __init__(self) -> None:
        self.values: dict[Any, bytes] = {}
        self.last: Any = _NOTHING
        self.last_enc = b""


class _Scoped:
    """The spans of one scope in one ResourceSpans, encoded: their pieces and their total length."""

    def __init__(self, scope: Any) -> None:
        self.scope = scope
        self.parts: list[bytes] = []
        self.size = 0


def encode_spans(spans: Sequence[ReadableSpan], encoder: Optional[OtlpTraceEncoder] = None) -> bytes:
    return (encoder or OtlpTraceEncoder()).encode(spans)
