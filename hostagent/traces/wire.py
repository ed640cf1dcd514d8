"""Wire detail on spans: captured headers, body sizes, bodies and SQL parameters, per [capture].

``with_wire_detail(call, capture, mask_sensitive)`` returns the Call with these attributes added
(a new Call; the input is never mutated). It runs in the pipeline *before* redaction, so every
value it adds passes through the redaction policy like anything else the Call carries:

- ``http.request.header.<name>`` / ``http.response.header.<name>``: string arrays (a header sent
  twice gives two values), lower-case names, as the HTTP semantic conventions say. HTTP/2
  pseudo-headers are not headers (the parser already left them out).
- ``http.request.body.size`` / ``http.response.body.size``: bytes really moved (the parser's
  count), also when the body was not captured; none when the parser could not count it (a negative
  size: HTTP/2 frames lost). What the parser already set wins.
- ``hostagent.http.request.body`` / ``hostagent.http.response.body``: the captured prefix, at
  most ``body_max_bytes``, as text (UTF-8, undecodable bytes replaced), with
  ``hostagent.http.request.body.truncated`` true when the span carries less than really moved, or
  when what moved is unknown.
  Off by default: bodies are where personal data lives.
- Databases: ``db.query.parameter.<key>`` attributes a parser produced are kept only when
  ``raw_sql`` is allowed (the raw statement itself is the parsers' job, also under raw_sql).

Sensitive headers (Authorization, Cookie, ...) are masked by the redaction stage when PII
detection is on; when it is off, ``mask_sensitive=True`` masks them here, so their values can
never be exported whatever the redaction settings.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Final

from hostagent.model import Attributes, Call
from hostagent.policy.pii import SENSITIVE_HEADERS
from hostagent.settings import CaptureOverride, CaptureSettings

HTTP_PROTOCOLS: Final = frozenset({"http", "http2", "grpc"})
DB_PARAMETER_PREFIX: Final = "db.query.parameter."
REQUEST_BODY: Final = "hostagent.http.request.body"
RESPONSE_BODY: Final = "hostagent.http.response.body"
TRUNCATED: Final = ".truncated"
MASK: Final = "[REDACTED:sensitive_header]"
# Headers the semantic conventions already carry as their own attributes, or that are hop-by-hop
# framing: repeating them as header attributes would only cost bytes.
_SKIP_HEADERS: Final = frozenset({"content-length", "transfer-encoding", "host", "user-agent", "traceparent",
                           "tracestate"})


def _applies(o: CaptureOverride, service: str, protocol: str) -> bool:
    return o.service in ("*", service) and o.protocol in ("*", protocol)


@functools.lru_cache(maxsize=256)
def capture_for(capture: CaptureSettings, service: str, protocol: str) -> CaptureSettings:
    """The settings for one (service.name, protocol): the base with every matching override
    applied in order. Cached per settings snapshot (frozen, hashable), so the hot path pays a
    dict lookup."""
    if not capture.overrides:
        return capture
    headers, bodies, limit = capture.headers, capture.bodies, capture.body_max_bytes
    for o in capture.overrides:
        if _applies(o, service, protocol):
            headers = headers if o.headers is None else o.headers
            bodies = bodies if o.bodies is None else o.bodies
            limit = limit if o.body_max_bytes is None else o.body_max_bytes
    return replace(capture, headers=headers, bodies=bodies, body_max_bytes=limit, overrides=())


# (prefix, headers, mask_sensitive) -> the attributes they give. A response's or a client's
# headers repeat message after message (a Date header changes once a second), so each distinct
# set is grouped once; one tuple hash per message instead of a loop over its headers. Bounded.
# A dict, not a tuple of pairs: ``out.update`` of a dict is the dicts' own merge, of pairs an
# iteration with a sequence check and an unpack per pair (~4% of the live poll thread).
GROUPED_MAX: Final = 1024
GROUPED_CHARS: Final = 2048  # larger header sets are grouped every time
_Items = dict[str, tuple[str, ...]]  # never changed once made
_grouped: Final[dict[tuple[str, tuple[tuple[str, str], ...], bool], _Items]] = {}


# id(headers) -> (headers, prefix, mask_sensitive, items): the same header tuple *object* again.
# A parser that memoises parsed heads (HTTP/1) hands on one tuple per distinct head, so the
# nested tuple need not even be hashed (~1.5 us for ten headers here). The entry holds the tuple,
# so its id cannot be reused while the entry lives. Bounded like _grouped.
_same: Final[dict[int, tuple[tuple[tuple[str, str], ...], str, bool, _Items]]] = {}


def header_attributes(prefix: str, headers: tuple[tuple[str, str], ...], mask_sensitive: bool,
                      out: Attributes) -> None:
    """``prefix + name`` -> tuple of values, in wire order (names are lower-case already)."""
    same = _same.get(id(headers))
    if same is not None and same[0] is headers and same[1] == prefix and same[2] == mask_sensitive:
        out.update(same[3])
        return
    key = (prefix, headers, mask_sensitive)
    try:
        items = _grouped.get(key)
    except TypeError:  # a parser handed a list somewhere inside: group it, do not remember it
        out.update(_group(prefix, headers, mask_sensitive))
        return
    if items is None:
        items = _group(prefix, headers, mask_sensitive)
        if sum(len(n) + len(v) for n, v in headers) > GROUPED_CHARS:
            out.update(items)
            return
        if len(_grouped) >= GROUPED_MAX:
            _grouped.clear()
        _grouped[key] = items
    if len(_same) >= GROUPED_MAX:
        _same.clear()
    _same[id(headers)] = (headers, prefix, mask_sensitive, items)
    out.update(items)


def _group(prefix: str, headers: tuple[tuple[str, str], ...], mask_sensitive: bool) -> _Items:
    grouped: dict[str, tuple[str, ...]] = {}
    for name, value in headers:
        if name in _SKIP_HEADERS:
            continue
        if mask_sensitive and name in SENSITIVE_HEADERS:
            value = MASK
        values = grouped.get(name)
        grouped[name] = (value,) if values is None else (*values, value)  # nearly always once
    return {prefix + name: values for name, values in grouped.items()}


def body_text(body: bytes, limit: int) -> str:
    # 'replace', not surrogateescape: an attribute must be valid UTF-8 for protobuf.
    return body[:limit].decode("utf-8", "replace")


def _body(key: str, body: bytes, size: int, limit: int, out: Attributes) -> None:
    if not body and not size:
        return
    kept = min(len(body), limit)
    out[key] = body_text(body, limit) if kept else ""
    # size < 0: the parser could not count what moved (frames lost), so the body may miss any part
    out[key + TRUNCATED] = size < 0 or kept < max(size, len(body))


def add_wire_detail(call: Call, capture: CaptureSettings, mask_sensitive: bool, attrs: Attributes) -> None:
    """Write the wire attributes ``capture`` allows for ``call`` into ``attrs`` (a copy of its
    attributes the caller owns). The pipeline's path: no new Call, no ``dataclasses.replace``."""
    protocol = call.protocol
    if protocol in HTTP_PROTOCOLS:
        if capture.headers:
            if call.request_headers:
                header_attributes("http.request.header.", call.request_headers, mask_sensitive, attrs)
            if call.response_headers:
                header_attributes("http.response.header.", call.response_headers, mask_sensitive, attrs)
        if call.request_size > 0:  # < 0: unknown (protocols.http2_streams.SIZE_UNKNOWN)
            attrs.setdefault("http.request.body.size", call.request_size)
        if call.response_size > 0:
            attrs.setdefault("http.response.body.size", call.response_size)
        if capture.bodies and capture.body_max_bytes > 0:
            _body(REQUEST_BODY, call.request_body, call.request_size, capture.body_max_bytes, attrs)
            _body(RESPONSE_BODY, call.response_body, call.response_size, capture.body_max_bytes, attrs)
    elif not capture.raw_sql:
        for key in [k for k in attrs if k.startswith(DB_PARAMETER_PREFIX)]:
            del attrs[key]


def with_wire_detail(call: Call, capture: CaptureSettings, mask_sensitive: bool = False) -> Call:
    """The Call with the wire attributes ``capture`` allows (see the module docstring); the same
    Call when there is nothing to add or remove."""
    attrs = dict(call.attributes)
    add_wire_detail(call, capture, mask_sensitive, attrs)
    if attrs == call.attributes:
        return call
    return replace(call, attributes=attrs)
