"""HTTP/2 over cleartext (RFC 9113), with gRPC decoded on top: Segments -> Calls, one per stream.

https://www.rfc-editor.org/rfc/rfc9113

Pieces: http2_frames (framing, reassembly, lost bytes), http2_hpack (HPACK per direction),
http2_streams (stream state -> Call), grpc (gRPC rules). This module runs the connection.

Detection (``looks_like``), either direction:
- the client connection preface ``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`` (or its first >= 4 bytes);
- or a connection first seen mid-way, or from the server's side, whose first bytes are a strictly
  plausible frame header (``http2_frames.plausible_header``: known type, defined flags only, length
  <= 16384 and the type's fixed length, stream-id rules) - and, when the Segment holds the next
  header too, that one as well. (grpcio servers write their SETTINGS before reading the preface,
  so a server's first Segment is a SETTINGS frame.)

HPACK state per direction is trusted only when that direction was seen from its start: the client
preface, or a first frame that is a non-ACK SETTINGS (the server's connection preface). Otherwise
the table is unknown and headers decode partially (counted in ``stats.extra``).

Calls: one per stream, from the segment carrying the first request HEADERS to the one carrying the
response's END_STREAM (gRPC trailers). Role: the request HEADERS' direction (EGRESS = CLIENT).
RST_STREAM ends a stream with its error code name as error.type (e.g. "CANCEL"); GOAWAY ends the
streams above its last-stream-id as "REFUSED_STREAM" and, with an error code, all open streams.
Streams still open at close end as "connection_closed". Server-push streams are not reported.

h2c upgrade: ``Http2Parser.after_upgrade(...)`` makes a parser for the bytes after ``101
Switching Protocols`` with stream 1 already holding the HTTP/1.1 request (RFC 7540 section 3.2).

``stats.extra`` keys: "hpack_unknown_table" (header blocks with fields dropped because the
dynamic table was unknown), "hpack_errors", "midstream" (directions first seen mid-way),
"sync_lost", "frames_skipped" (frames of a big write not seen, the ones that end it found in
its captured tail), "push_streams", "streams_evicted".
"""

from __future__ import annotations

from typing import Optional, Union

from hostagent.model import Call, Direction, Segment
from hostagent.protocols.base import ParserStats, ProtocolSpec
from hostagent.protocols.http2_frames import (
    CONTINUATION,
    DATA,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    FLAG_PRIORITY,
    GOAWAY,
    HEADER_LEN,
    HEADERS,
    LOST_AFTER,
    LOST_BEFORE,
    PREFACE,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    Frame,
    FrameReader,
    error_code_name,
    parse_header,
    plausible_header,
)
from hostagent.protocols.http2_hpack import Header, HeaderBlockDecoder
from hostagent.protocols.http2_streams import END_UNSEEN, Stream, to_call
from hostagent.protocols.http_common import BodyLimit, body_limit_of

_PREFACE_LEN = len(PREFACE)


def looks_like(data: bytes, direction: Direction) -> bool:
    """Cheap prefilter over a connection's first captured bytes (see module docstring)."""
    if len(data) >= 4 and data[:_PREFACE_LEN] == PREFACE[: len(data)]:
        return True
    if not plausible_header(data):
        return False
    nxt = HEADER_LEN + parse_header(data)[0]
    return len(data) < nxt + HEADER_LEN or plausible_header(data, nxt)


class _Side:
    """One direction of the connection."""

    __slots__ = (
        "block",
        "block_end_stream",
        "block_sid",
        "block_ts",
        "block_type",
        "hpack",
        "pending",
        "reader",
    )

    def __init__(self) -> None:
        self.reader = FrameReader()
        self.hpack: Optional[HeaderBlockDecoder] = None  # made at the first frame (known or not)
        self.pending: Optional[bytearray] = bytearray()  # bytes that may be the preface; None after
        self.block: Optional[bytearray] = None  # header block awaiting CONTINUATION
        self.block_sid = 0
        self.block_type = HEADERS
        self.block_end_stream = False
        self.block_ts = 0


class Http2Parser:
    """Per-connection HTTP/2 decoder (StreamParser)."""

    def __init__(self, body_limit: Union[int, BodyLimit] = 1024, max_streams: int = 1024,
                 reference_hpack: bool = False) -> None:  # fmt: skip
        self.stats = ParserStats()
        self._reference_hpack = reference_hpack  # decode with hpack.Decoder (see http2_hpack)
        self._body_limit = body_limit_of(body_limit)  # read per DATA frame kept: see BodyLimit
        self._max_streams = max_streams
        self._sides = {Direction.EGRESS: _Side(), Direction.INGRESS: _Side()}
        self._client: Optional[Direction] = None  # direction of the client's bytes, once known
        self._streams: dict[int, Stream] = {}
        self._max_sid = 0  # highest client-initiated stream seen: lower ids are not new streams
        self._out: list[Call] = []
        self._grpc_seen = False  # a gRPC stream finished here: a gRPC channel carries only gRPC

    @classmethod
    def after_upgrade(
        cls,
        *,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        request_direction: Direction,
        start_ns: int,
        request_size: int = 0,
        scheme: str = "http",
    ) -> Http2Parser:
        """A parser for an h2c connection after ``101 Switching Protocols``: the HTTP/1.1 upgrade
        request is stream 1, half-closed; its response arrives as HTTP/2 frames. ``headers`` are
        the HTTP/1.1 request's (the Host header becomes ``:authority``)."""
        parser = cls()
        lower = [(n.lower(), v) for n, v in headers]
        host = next((v for n, v in lower if n == "host"), None)
        request: list[Header] = [(":method", method), (":path", target), (":scheme", scheme)]
        if host is not None:
            request.append((":authority", host))
        skip = {"host", "connection", "upgrade", "http2-settings"}
        request += [(n, v) for n, v in lower if n not in skip]
        stream = Stream(1, request_direction, start_ns, start_ns, request, request_ended=True)
        stream.request_size = request_size
        parser._streams[1] = stream
        parser._max_sid = 1
        parser._client = request_direction
        return parser

    def feed(self, segment: Segment) -> list[Call]:
        side = self._sides[segment.direction]
        data, size = segment.data, max(segment.size, len(segment.data))
        moved = size
        if side.pending is not None:
            data, size = self._strip_preface(side, segment.direction, data, size)
            if side.pending is not None:
                return []
        if segment.frames:
            frames, lost = side.reader.feed_block(data, size, segment.frames, moved - size)
        else:
            frames, lost = side.reader.feed(data, size, segment.tail, self._streams)
        if lost & LOST_BEFORE:
            self._sync_lost(side)
        for frame in frames:
            if not frame.complete:
                self.stats.truncated += 1
            if frame.after_gap:
                self._gap(side)
            self._frame(side, segment.direction, frame, segment.ts_ns)
        if lost & LOST_AFTER:
            # After the frames: they were whole and decode with the table as it was (a big gRPC
            # message's own HEADERS come before the tail the capture cut).
            self._sync_lost(side)
        self.stats.resyncs = sum(s.reader.resyncs for s in self._sides.values())
        out, self._out = self._out, []
        return out

    def _sync_lost(self, side: _Side) -> None:
        """Frames went by unseen (an uncaptured tail hid frame boundaries: big messages)."""
        self._count("sync_lost")
        self._lose_table(side)
        self._frames_lost()

    def _gap(self, side: _Side) -> None:
        """Frames went by unseen in a big write, and the ones that end it were found in its tail
        (http2_frames): no header block was among the unseen (the HPACK table stays whole) unless
        one was open, but their DATA lengths and messages are unknown."""
        self._count("frames_skipped")
        if side.block is not None:  # its CONTINUATION frames may have been in the gap
            self._lose_table(side)
        self._frames_lost()

    def lost(self) -> list[Call]:
        """Calls of this connection were lost in the kernel before the next bytes: each direction's
        frame reader takes up again at the next plausible frame start, and its HPACK table becomes
        partly known (entries inserted from then on are known; a reference to an older one drops
        that field, never a guessed value). Streams are named by their ids, so no answer can
        complete another stream's call."""
        self._count("calls_lost")
        self._frames_lost()
        for side in self._sides.values():
            side.pending = None  # the preface, if any, may have been among the lost calls
            side.reader.lose()
            if side.hpack is None:  # the lost calls may have held this direction's first blocks
                side.hpack = HeaderBlockDecoder(table_known=False, reference=self._reference_hpack)
            self._lose_table(side)
        return []

    def _frames_lost(self) -> None:
        """Frames of the streams in flight may be among those not seen: their message counts and
        body sizes are unknowable, and a stream whose end is never seen is not reported as the
        connection's failure: at close it is reported with what was seen (``END_UNSEEN``, ending
        at its last frame seen) when its response began, else dropped (counted as unpaired)."""
        for stream in self._streams.values():
            stream.frames_lost = True
            stream.request_lost = stream.request_lost or not stream.request_ended
            stream.request_messages.count = None
            stream.response_messages.count = None

    def close(self, ts_ns: int) -> list[Call]:
        for sid, stream in list(self._streams.items()):
            if stream.frames_lost:  # its end may have been lost: not a failure we saw
                if stream.response is None:  # nor its answer: nothing to say of its outcome
                    del self._streams[sid]
                    self.stats.unpaired += 1
                else:  # an answer seen, its end cut from a big write (a 100 KB gRPC reply's trailers)
                    self._finish(sid, stream.end_ns, end_unseen=True)
                continue
            self._finish(sid, ts_ns, "connection_closed", "connection closed before the response ended")
        out, self._out = self._out, []
        return out

    # -- bytes to frames --------------------------------------------------------------------

    def _strip_preface(self, side: _Side, direction: Direction, data: bytes, size: int) -> tuple[bytes, int]:
        """Consume the client preface at the very start of a direction, even split across
        Segments; anything else is handed on untouched."""
        assert side.pending is not None
        held = bytes(side.pending) + data
        size += len(held) - len(data)
        n = min(len(held), _PREFACE_LEN)
        if held[:n] != PREFACE[:n]:
            side.pending = None
            return held, size
        if n < _PREFACE_LEN and size == len(held):
            side.pending = bytearray(held)  # the preface is split across Segments
            return b"", 0
        # The preface (its uncaptured rest, if the tail was lost, cannot be anything else).
        side.pending = None
        self._client = direction
        side.hpack = HeaderBlockDecoder(table_known=True, reference=self._reference_hpack)
        return held[n:], max(size - _PREFACE_LEN, 0)

    def _lose_table(self, side: _Side) -> None:
        side.block = None
        if side.hpack is not None and side.hpack.table_known:
            side.hpack.table_lost()

    # -- frames -----------------------------------------------------------------------------

    def _frame(self, side: _Side, direction: Direction, f: Frame, ts: int) -> None:
        if side.hpack is None:  # first frame of a direction not opened by the preface
            known = f.type == SETTINGS and not f.flags & FLAG_ACK
            if not known:
                self._count("midstream")
            side.hpack = HeaderBlockDecoder(table_known=known, reference=self._reference_hpack)
        if side.block is not None:
            if f.type == CONTINUATION and f.stream_id == side.block_sid:
                if not f.complete:
                    self._lose_table(side)
                    return
                side.block += f.payload
                if f.flags & FLAG_END_HEADERS:
                    self._block_done(side, direction)
                return
            self._lose_table(side)  # RFC 9113 6.10: nothing may interleave a header block
        ftype = f.type
        if ftype == DATA:
            self._data(direction, f, ts)
        elif ftype == HEADERS or ftype == PUSH_PROMISE:
            self._headers(side, direction, f, ts)
        elif ftype == RST_STREAM:
            if f.stream_id in self._streams and len(f.payload) >= 4:
                code = error_code_name(int.from_bytes(f.payload[:4], "big"))
                self._finish(f.stream_id, ts, code, f"RST_STREAM {code}")
        elif ftype == GOAWAY and len(f.payload) >= 8:
            self._goaway(direction, f, ts)
        elif ftype == CONTINUATION:
            self._lose_table(side)  # a CONTINUATION without its HEADERS: that block is lost

    def _data(self, direction: Direction, f: Frame, ts: int) -> None:
        stream = self._streams.get(f.stream_id)
        if stream is None:
            return
        payload, length = f.payload, f.length
        if f.flags & FLAG_PADDED:
            if not payload:
                return  # pad length byte not captured: the data length is unknowable
            length = max(length - 1 - payload[0], 0)
            payload = payload[1 : 1 + length]
        request = direction == stream.initiator
        counter = stream.request_messages if request else stream.response_messages
        counter.feed(payload)
        counter.skip(length - len(payload))
        body = stream.request_body if request else stream.response_body
        room = self._body_limit.value - len(body)
        # Only while the body so far holds every byte that moved: after a DATA payload the capture
        # cut short (the span says truncated) or frames that went by unseen, a later frame's bytes
        # would join it across the gap.
        moved = stream.request_size if request else stream.response_size
        if room > 0 and len(body) == moved and not stream.frames_lost:
            body += payload[:room]
        if request:
            stream.request_size += length
            if f.flags & FLAG_END_STREAM:
                stream.request_ended = True
        else:
            stream.response_size += length
            stream.end_ns = ts
            if f.flags & FLAG_END_STREAM:
                self._finish(f.stream_id, ts)

    def _headers(self, side: _Side, direction: Direction, f: Frame, ts: int) -> None:
        if not f.complete:
            self._lose_table(side)
            self._count("hpack_unknown_table")
            return
        p = f.payload
        start, pad = 0, 0
        if f.flags & FLAG_PADDED:
            if not p:
                self._lose_table(side)
                return
            start, pad = 1, p[0]
        if f.type == PUSH_PROMISE:
            start += 4  # promised stream id; the pushed stream itself is not reported
            self._count("push_streams")
        elif f.flags & FLAG_PRIORITY:
            start += 5
        if start + pad > len(p):
            self._lose_table(side)
            return
        side.block = bytearray(p[start : len(p) - pad])
        side.block_sid = f.stream_id
        side.block_type = f.type
        side.block_end_stream = bool(f.flags & FLAG_END_STREAM)
        side.block_ts = ts
        if f.flags & FLAG_END_HEADERS:
            self._block_done(side, direction)

    def _block_done(self, side: _Side, direction: Direction) -> None:
        assert side.block is not None and side.hpack is not None
        block, side.block = bytes(side.block), None
        errors_before = side.hpack.errors
        headers, unknown = side.hpack.decode(block)
        if side.hpack.errors != errors_before:
            self._count("hpack_errors")
        elif unknown:
            self._count("hpack_unknown_table")
        if side.block_type == PUSH_PROMISE:
            return
        self._on_headers(direction, side.block_sid, headers, unknown > 0, side.block_end_stream, side.block_ts)

    def _on_headers(
        self, direction: Direction, sid: int, headers: list[Header], incomplete: bool, end: bool, ts: int
    ) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            if sid % 2 == 0 or sid <= self._max_sid:
                return  # server push, or a stream that already finished
            if self._client is not None and direction != self._client:
                self.stats.unpaired += 1  # a response whose request we never saw
                return
            self._client = direction
            self._max_sid = sid
            if len(self._streams) >= self._max_streams:
                self._streams.pop(next(iter(self._streams)))
                self._count("streams_evicted")
            self._streams[sid] = Stream(sid, direction, ts, ts, headers, incomplete=incomplete, request_ended=end)
            return
        stream.incomplete = stream.incomplete or incomplete
        if direction == stream.initiator:
            stream.request_ended = stream.request_ended or end  # request trailers
            return
        stream.end_ns = ts
        if stream.response is None:
            status = next((v for n, v in headers if n == ":status"), "")
            if status.startswith("1") and not end:
                return  # informational (100 Continue): the final response follows
            stream.response = headers
        else:
            stream.trailers = headers
        if end:
            self._finish(sid, ts)

    def _goaway(self, direction: Direction, f: Frame, ts: int) -> None:
        last = int.from_bytes(f.payload[:4], "big") & 0x7FFFFFFF
        code = error_code_name(int.from_bytes(f.payload[4:8], "big"))
        for sid, stream in list(self._streams.items()):
            if stream.initiator == direction:
                continue  # GOAWAY limits the streams its receiver started
            if sid > last:
                self._finish(sid, ts, "REFUSED_STREAM", f"GOAWAY last_stream_id={last} {code}")
            elif code != "NO_ERROR":
                self._finish(sid, ts, code, f"GOAWAY {code}")

    def _finish(self, sid: int, ts: int, reset: Optional[str] = None, message: str = "",
                end_unseen: bool = False) -> None:
        stream = self._streams.pop(sid, None)
        if stream is None:
            return
        stream.end_ns = max(stream.end_ns, ts)
        call = to_call(stream, reset, message if reset else "", self._grpc_seen)
        if end_unseen:
            call.attributes[END_UNSEEN] = True
        self._grpc_seen = self._grpc_seen or call.protocol == "grpc"
        self._out.append(call)

    def _count(self, key: str) -> None:
        self.stats.extra[key] = self.stats.extra.get(key, 0) + 1


SPEC = ProtocolSpec(
    name="http2",
    probe="http2",
    looks_like=looks_like,
    new_parser=Http2Parser,
    transports=("tcp",),
)
