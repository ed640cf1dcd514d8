"""PostgreSQL frontend/backend protocol v3 (https://www.postgresql.org/docs/15/protocol.html): Calls.

One ``PostgresParser`` per connection sees both directions. The client's messages (startup,
Query, Parse/Bind/Describe/Execute/Sync...) are told from the server's by content, so the parser
works from either end: client messages written by this process -> Role.CLIENT, read -> SERVER.

What becomes a Call (one span each):
- simple Query: one Call per statement the server ran (a Query text with three statements gives
  three Calls, each ended by its CommandComplete / EmptyQueryResponse / ErrorResponse). After an
  error the server skips the rest of the text: skipped statements make no Call and are counted
  (``stats.extra["skipped"]``).
- extended protocol: one Call per Execute. Parse remembers statement text by name (the unnamed
  one included), Bind maps a portal to its statement, so an Execute knows its SQL, also when it
  reuses a statement prepared long before. Pipelines (many Executes before one Sync) pair in
  order. An ErrorResponse makes the server skip to the next Sync: the failing message's Call (the
  Execute that would have run the statement, or the failing Parse/Bind itself when no Execute
  follows) carries the error; the skipped Executes make no Call and are counted.
- Parse/Bind/Describe/Close/Sync, authentication, ParameterStatus, notices: no Call.

A connection first seen mid-way (open before the agent started) is recognised by its client's
next write, the extended protocol's messages included (``looks_like``): a pool whose statements
were prepared before keeps sending Bind/Execute/Sync only. Those Executes have no text (it was in
a Parse not seen): their Calls carry the statement's name, the CommandComplete tag's operation,
and nothing guessed.

``db.namespace`` is the startup message's database (which defaults to the user name, as the
server does). SSLRequest/GSSENCRequest answered 'N' keep parsing; 'S'/'G' mean TLS/GSS from the
next byte on: ``upgraded`` is set so the capture stage mutes the connection. COPY data in either
direction is framed and ignored; the COPY statement's Call ends at its CommandComplete, whose
tag (``COPY n``) gives ``db.response.returned_rows`` of a COPY TO STDOUT.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Optional, Union

from hostagent.model import Call, Direction, Role, Segment
from hostagent.protocols.base import ParserStats, ProtocolSpec, RoleGuess
from hostagent.protocols.length_framer import Frame, LengthFramer
from hostagent.protocols.sql import (
    RawSql,
    StatementCache,
    raw_sql_switch,
    scrub_error_message,
    span_name,
    split_statements,
)

SYSTEM = "postgresql"
PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_MESSAGE = 1 << 30  # the server's own limit for a message
MAX_STARTUP = 10000  # libpq caps startup packets at 10000 bytes
KEEP_FRONTEND = 16 * 1024  # SQL text kept per message
KEEP_BACKEND = 2048  # enough for an ErrorResponse's code and message
MAX_PREPARED = 256  # named statements remembered per connection (text capped at MAX_TEXT)
MAX_ITEMS = 1024  # requests waiting for their answers
MAX_TEXT = 4096  # db.query.text length cap, and of each remembered statement
MAX_CACHE = 64  # per-connection memo of sanitised statements

FRONTEND_ONLY = frozenset(b"QPBXFpf")
BACKEND_ONLY = frozenset(b"RKZT123nstIAGWVvN")
FRONTEND_TYPES = frozenset(b"QPBDESCHXFpdcf")
STATEMENT_NAME = "hostagent.db.statement.name"
MID_STREAM = frozenset(b"QPBEDCSH")  # what a client's write can start with once connected
AFTER_A_MESSAGE = frozenset(b"Xdc")  # what can follow one in the same write (a Query's COPY data)
BACKEND_TYPES = frozenset(b"RSKZTDCEIN123nstAGHWdcVv")
# Backend messages whose length the protocol fixes (without the type byte): bytes taken out of
# context are not taken for a whole answer (_whole_answer) when one of these says another length.
FIXED_LENGTH = {0x31: 4, 0x32: 4, 0x33: 4, 0x6E: 4, 0x73: 4, 0x49: 4, 0x63: 4, 0x5A: 5, 0x4B: 12}
READY = 0x5A  # 'Z' ReadyForQuery: the end of every answer to a Query or a Sync


def _int32(b: bytes, at: int) -> int:
    return int.from_bytes(b[at : at + 4], "big")


def _untyped_code(data: bytes) -> int:
    """The code of a startup-phase message (no type byte), or 0 when ``data`` is not one."""
    if len(data) < 8:
        return 0
    length, code = _int32(data, 0), _int32(data, 4)
    if code == PROTOCOL_3 and 9 <= length <= MAX_STARTUP:
        return code
    if code in (SSL_REQUEST, GSSENC_REQUEST) and length == 8:
        return code
    if code == CANCEL_REQUEST and length == 16:
        return code
    return 0


def _printable(b: bytes) -> bool:
    return all(c >= 0x20 or c in (9, 10, 13) for c in b)


def looks_like(data: bytes, direction: Direction) -> bool:
    """A startup/SSLRequest/GSSENCRequest/CancelRequest, or frontend messages of a connection
    first seen mid-way (``_frontend_run``)."""
    code = _untyped_code(data)
    if code:
        return code != PROTOCOL_3 or _printable(data[8:40].replace(b"\x00", b" "))
    return _frontend_run(data)


def _frontend_run(data: bytes) -> bool:
    """Whether ``data`` is a client's write of typed frontend messages: a Query or Parse of SQL,
    or the extended protocol's Bind/Execute/Describe/Close/Sync/Flush that a pool which prepared
    its statements before the agent started sends (usually Bind, Describe, Execute, Sync in one
    write). Every message must be laid out as its type says (lengths consistent with the names
    and values inside, known format codes), so that other protocols' bytes are not taken for
    PostgreSQL; only a message that runs past the captured bytes is checked as far as it goes.
    One message alone must be a Query, Parse, Bind or Execute: a lone Sync is 5 bytes of little
    evidence."""
    at = 0
    n = len(data)
    complete = 0
    strong = False
    while at < n:
        kind = data[at]
        if kind not in MID_STREAM and not (complete and kind in AFTER_A_MESSAGE):
            return False
        if n - at < 5:
            break  # the capture (or a role guess's first bytes) ends inside a header
        length = _int32(data, at + 1)
        if not 4 <= length < MAX_MESSAGE or (kind in b"SHXc" and length != 4):
            return False
        if kind in AFTER_A_MESSAGE:  # Terminate, COPY data / done: nothing more to check
            at += 1 + length
            continue
        body = data[at + 5 : at + 1 + length]
        whole = len(body) == length - 4
        if not _frontend_body_ok(kind, body, whole):
            return False
        if kind in b"QPBE":
            strong = True
        if not whole:
            break
        complete += 1
        at += 1 + length
    return strong or complete >= 2


def _frontend_body_ok(kind: int, body: bytes, whole: bool) -> bool:
    """The body of one frontend message has its type's layout (``whole``: all of it is here)."""
    if kind in b"SH":  # Sync, Flush: no body
        return True
    if kind in b"DC":  # Describe / Close: 'S'tatement or 'P'ortal, then its name
        if body[:1] not in (b"S", b"P"):
            return not body and not whole
        name, rest = _name(body[1:])
        return name is not None and not rest if whole else name is not None or _printable(body[1:65])
    if kind == 0x45:  # Execute: portal name, int32 row limit
        name, rest = _name(body)
        if name is None:
            return _cut_name(body, whole)
        return len(rest) == 4 if whole else len(rest) <= 4
    if kind == 0x42:  # Bind: portal, statement, formats, values, result formats
        return _bind_ok(body, whole)
    if kind == 0x50:  # Parse: statement name, SQL, parameter types
        name, rest = _name(body)
        if name is None:
            return _cut_name(body, whole)
        if not _sql_start(rest.split(b"\x00", 1)[0]):
            return False
        end = rest.find(b"\x00")
        if not whole or end < 0:
            return not whole
        types = rest[end + 1 :]  # int16 count, an int32 type OID each
        return len(types) >= 2 and len(types) == 2 + 4 * int.from_bytes(types[:2], "big")
    return _sql_start(body.split(b"\x00", 1)[0])  # Query


def _name(body: bytes) -> tuple[Optional[bytes], bytes]:
    """A statement or portal name (at most NAMEDATALEN-1 printable bytes) and what follows it."""
    end = body.find(b"\x00", 0, 65)
    if end < 0 or not _printable(body[:end]):
        return None, body
    return body[:end], body[end + 1 :]


def _cut_name(body: bytes, whole: bool) -> bool:
    """A name that the end of the captured bytes cut: printable as far as it goes."""
    return not whole and len(body) < 64 and _printable(body)


def _sql_start(text: bytes) -> bool:
    text = text[:64].lstrip()
    if not text or not _printable(text):
        return False
    return text[:1].isalpha() or text[:1] == b"(" or text[:2] in (b"--", b"/*")


def _bind_ok(body: bytes, whole: bool) -> bool:
    """Bind's layout: portal, statement, format codes (0 text, 1 binary), parameter values
    (int32 length, -1 for NULL), result format codes; consumed exactly when ``whole``."""
    portal, rest = _name(body)
    if portal is None:
        return _cut_name(body, whole)
    statement, rest = _name(rest)
    if statement is None:
        return _cut_name(rest, whole)
    at = 0
    for part in range(3):
        if at + 2 > len(rest):
            return not whole
        count = int.from_bytes(rest[at : at + 2], "big")
        at += 2
        if part == 1:  # values
            for _ in range(count):
                if at + 4 > len(rest):
                    return not whole
                size = int.from_bytes(rest[at : at + 4], "big", signed=True)
                if size < -1:
                    return False
                at += 4 + max(size, 0)
            continue
        codes = rest[at : at + 2 * count]
        if any(codes[i] != 0 or codes[i + 1] > 1 for i in range(0, len(codes) - 1, 2)):
            return False
        at += 2 * count
    return at == len(rest) or not whole


class _Item:
    """A frontend message still waiting for its answer (mutable, module-private)."""

    __slots__ = ("copy_out", "index", "kind", "next_start", "req_size", "resp_size", "result", "rows", "sql",
                 "start_ns", "statement", "statements")  # fmt: skip

    def __init__(self, kind: str, start_ns: int, sql: Optional[str] = None, req_size: int = 0) -> None:
        self.kind = kind  # query | parse | bind | describe | execute | close | sync
        self.start_ns = start_ns
        self.sql = sql
        self.statement = ""  # the prepared statement a Bind/Execute runs, by name
        self.statements: list[str] = []
        self.index = 0  # next statement of a query to complete
        self.next_start = start_ns
        self.rows = 0
        self.result = False  # a RowDescription announced rows: their count is worth saying, 0 too
        self.copy_out = False  # COPY ... TO STDOUT: rows come as CopyData, counted by the tag only
        self.req_size = req_size
        self.resp_size = 0


class PostgresParser:
    """Per-connection PostgreSQL decoder; ``raw_sql`` on keeps db.query.text unsanitised (a
    ``RawSql`` switch is read per call: a settings change reaches connections already open)."""

    def __init__(self, raw_sql: Union[bool, RawSql] = False) -> None:
        self._raw = raw_sql_switch(raw_sql)
        self.stats = ParserStats()
        self.upgraded = False  # TLS/GSS accepted: the rest is encrypted, stop here
        self._fe = LengthFramer(KEEP_FRONTEND)
        self._be = LengthFramer(KEEP_BACKEND)
        self._roles = RoleGuess(self._guess_client_dir, self.stats)
        self._untyped = True  # the frontend may still send a startup-phase message
        self._ssl_answers = 0  # single-byte answers owed to SSLRequest/GSSENCRequest
        self._database: Optional[str] = None
        self._prepared: OrderedDict[str, str] = OrderedDict()
        self._portals: dict[str, tuple[str, Optional[str]]] = {}  # portal -> statement name, its SQL
        self._items: deque[_Item] = deque()
        self._req_bytes = 0  # Parse/Bind/Describe bytes waiting for their Execute
        # Framing lost inside a response (a big result read in pieces longer than the captured
        # prefix): the client's reads do not start on message boundaries, so the next backend
        # bytes cannot be trusted to start one. Adrift, backend bytes only count towards the
        # waiting statement (its size, its end) until the client's next message (_run_aground).
        self._adrift = False
        self._adrift_end = 0
        self._last_backend_ns = 0  # when backend bytes were last seen (_lost_in_frame)
        self._statements_seen = StatementCache("postgresql", self._raw, MAX_CACHE, MAX_TEXT)
        self._out: list[Call] = []

    @property
    def raw_sql(self) -> bool:
        """Whether db.query.text keeps its literals now."""
        return self._raw.on

    # -- StreamParser ------------------------------------------------------------------------------
    def feed(self, segment: Segment) -> list[Call]:
        if self.upgraded:
            return []
        try:
            for seg in self._roles.ready(segment):
                self._consume(seg)
        except Exception:  # a parser bug must never take the pipeline down
            self.stats.resyncs += 1
            self._items.clear()
            self._fe.drop()
            self._be.drop()
        out, self._out = self._out, []
        return out

    def close(self, ts_ns: int) -> list[Call]:
        self.stats.unpaired += sum(1 for i in self._items if i.kind in ("query", "execute"))
        self._items.clear()
        return []

    def lost(self) -> list[Call]:
        """Calls of this connection were lost in the kernel before the next bytes: what waits for
        an answer may have lost it (dropped, counted as unpaired, as at close), so that no later
        answer completes the wrong statement; both framers start again at the next segment.
        Prepared statements and portals stay known."""
        self.close(0)
        self._req_bytes = 0
        self._adrift = False
        self._fe.drop()
        self._be.drop()
        out, self._out = self._out, []
        return out

    # -- roles -----------------------------------------------------------------------------------
    def _guess_client_dir(self, data: bytes, direction: Direction) -> Optional[Direction]:
        other = Direction.INGRESS if direction == Direction.EGRESS else Direction.EGRESS
        if not data:
            return None
        if data[0] in BACKEND_ONLY or data in (b"N", b"S", b"G"):
            return other
        if _frontend_run(data):  # Execute/Describe/Close/Sync share type bytes with the backend's
            return direction
        if len(data) < 8 and data[0] not in FRONTEND_ONLY:
            return None  # a startup message's length: wait for its code
        if _untyped_code(data) or data[0] in FRONTEND_ONLY:
            return direction
        return None

    @property
    def role(self) -> Role:
        return self._roles.role

    # -- framing ---------------------------------------------------------------------------------
    def _consume(self, seg: Segment) -> None:
        if seg.direction == self._roles.client:
            framer, handle, frame_len = self._fe, self._frontend, self._fe_len
            if self._adrift:
                self._run_aground()
        else:
            framer, handle, frame_len = self._be, self._backend, self._be_len
            if self._adrift:
                self._drift(seg)
                self._last_backend_ns = seg.ts_ns
                return
            if self._lost_in_frame(seg):
                self._realign()
            self._last_backend_ns = seg.ts_ns
        if framer.push(seg.data, seg.size, seg.ts_ns):
            self.stats.resyncs += 1
        while not self.upgraded:
            frame = framer.next(frame_len)
            if frame is None:
                break
            if frame.truncated:
                self.stats.truncated += 1
            handle(frame)
        if framer is self._be and framer.lost and self._runner() is not None:
            self._adrift = True  # the response goes on past a boundary the capture did not see
            self._adrift_end = seg.ts_ns

    def _lost_in_frame(self, seg: Segment) -> bool:
        """Whether backend bytes were lost without the capture stage being told (``lost()``; not
        every loss in the kernel is reported, bpf/capture.c says which are not): the framer, inside
        a message, would take the next bytes for the rest of it and every later header from the
        wrong place, so that a pooled connection made no span again, or paired answers with the
        wrong statements. Said by the two directions together, as for Redis: the client wrote after
        the last backend bytes came while statements written before still wait and a message is
        unfinished (a pipelining client writes on while an answer comes, but then the next bytes
        continue that message), and this segment, whole, is nothing but complete messages ending
        with a ReadyForQuery."""
        be, items = self._be, self._items
        return (
            (be.skip > 0 or be.buffered > 0)
            and len(items) > 1
            and items[0].start_ns <= self._last_backend_ns < items[-1].start_ns
            and seg.size == len(seg.data)
            and _whole_answer(seg.data)
        )

    def _realign(self) -> None:
        """Frame the backend afresh from this segment (``_lost_in_frame``). What was written before
        the last backend bytes came may have had its answer in what was lost: dropped, counted as
        unpaired, never paired with a later answer; the segment answers what was written since."""
        self.stats.resyncs += 1
        items = self._items
        while items and items[0].start_ns <= self._last_backend_ns:
            if items.popleft().kind in ("query", "execute"):
                self.stats.unpaired += 1
        self._be.restart()

    def _drift(self, seg: Segment) -> None:
        """A backend segment while adrift: more of the waiting statement's answer."""
        self._adrift_end = seg.ts_ns
        runner = self._runner()
        if runner is not None:
            runner.resp_size += seg.size

    def _run_aground(self) -> None:
        """The client sends again: the answer it waited for is over (a client reads a response
        whole before its next request; pipelining clients are the exception). The statement ends
        with the last backend bytes seen; its rows and outcome were in bytes not captured, so the
        span says neither, rather than what bytes taken out of context would say. What waited
        behind it is dropped (unpaired), and the backend framer starts again at the next segment,
        the start of the next response."""
        self._adrift = False
        runner = self._runner()
        if runner is not None:
            sql: Optional[str]
            if runner.kind == "query":
                if not runner.statements:
                    runner.statements = split_statements(runner.sql or "")
                index = runner.index
                sql = runner.statements[index] if index < len(runner.statements) else None
                start = runner.next_start
                req = runner.req_size if index == 0 else 0
            else:
                sql, start, req = runner.sql, runner.start_ns, runner.req_size
            self._emit(sql, start, self._adrift_end, "", -1, None, req, runner.resp_size, runner.statement)
            self.stats.truncated += 1
        self.stats.unpaired += sum(1 for i in self._items if i.kind in ("query", "execute") and i is not runner)
        self._items.clear()
        self._be.drop()

    def _fe_len(self, head: bytes) -> Optional[int]:
        if self._untyped:
            if len(head) < 8:
                return None
            if _untyped_code(head):
                return _int32(head, 0)
            self._untyped = False  # first seen mid-way: typed messages from here on
        return _typed_len(head, FRONTEND_TYPES)

    def _be_len(self, head: bytes) -> Optional[int]:
        if self._ssl_answers and head[:1] in (b"N", b"S", b"G"):
            return 1
        return _typed_len(head, BACKEND_TYPES)

    # -- frontend ----------------------------------------------------------------------------------
    def _frontend(self, f: Frame) -> None:
        data = f.data
        if self._untyped and _untyped_code(data):
            code = _int32(data, 4)
            if code == PROTOCOL_3:
                self._untyped = False
                self._startup(data[8:])
            elif code in (SSL_REQUEST, GSSENC_REQUEST):
                self._ssl_answers += 1
            return
        kind = data[0]
        body = data[5:]
        if kind == 0x51:  # 'Q' query string
            self._add(_Item("query", f.start_ns, _cstr(body)[0], f.total))
        elif kind == 0x50:  # 'P' statement name, query string, parameter types
            name, rest = _cstr(body)
            sql = _cstr(rest)[0]
            self._remember(name, sql)
            self._req_bytes += f.total
            self._add(_Item("parse", f.start_ns, sql))
        elif kind == 0x42:  # 'B' portal name, statement name, formats, values
            portal, rest = _cstr(body)
            statement = _cstr(rest)[0]
            self._portals[portal] = (statement, self._prepared.get(statement))
            if len(self._portals) > MAX_PREPARED:
                self._portals.pop(next(iter(self._portals)))
            self._req_bytes += f.total
            self._add(_bound(_Item("bind", f.start_ns), self._portals[portal]))
        elif kind == 0x45:  # 'E' portal name, max rows
            item = _Item("execute", f.start_ns, None, self._req_bytes + f.total)
            self._req_bytes = 0
            self._add(_bound(item, self._portals.get(_cstr(body)[0], ("", None))))
        elif kind == 0x44:  # 'D' 'S'|'P', name
            self._req_bytes += f.total
            self._add(_Item("describe", f.start_ns))
        elif kind == 0x43:  # 'C' close 'S'|'P', name
            name = _cstr(body[1:])[0]
            (self._prepared if body[:1] == b"S" else self._portals).pop(name, None)
            self._add(_Item("close", f.start_ns))
        elif kind == 0x53:  # 'S' sync
            self._add(_Item("sync", f.start_ns))
        # 'H' flush, 'X' terminate, 'p' auth, 'd'/'c'/'f' COPY data, 'F' function call: no answer
        # of their own that a Call needs.

    def _startup(self, params: bytes) -> None:
        fields = params.split(b"\x00")
        values = dict(zip(fields[0::2], fields[1::2]))
        db = values.get(b"database") or values.get(b"user")
        if db:
            self._database = db.decode("utf-8", "replace")

    def _remember(self, name: str, sql: str) -> None:
        self._prepared[name] = sql[:MAX_TEXT]
        self._prepared.move_to_end(name)
        if len(self._prepared) > MAX_PREPARED:
            self._prepared.popitem(last=False)

    def _add(self, item: _Item) -> None:
        self._items.append(item)
        if len(self._items) > MAX_ITEMS:
            old = self._items.popleft()
            if old.kind in ("query", "execute"):
                self.stats.unpaired += 1

    # -- backend -------------------------------------------------------------------------------------
    def _backend(self, f: Frame) -> None:
        data = f.data
        if f.total == 1:  # answer to SSLRequest / GSSENCRequest
            self._ssl_answers = max(0, self._ssl_answers - 1)
            if data != b"N":
                self.upgraded = True
            return
        kind = data[0]
        items = self._items
        head = items[0] if items else None
        if head is not None:
            head.resp_size += f.total
        if kind in (0x43, 0x49, 0x73):  # CommandComplete / EmptyQuery / Suspended
            tag = _cstr(data[5:])[0] if kind == 0x43 else ""
            self._complete(f, tag, None)
        elif kind == 0x44:  # 'D' DataRow
            runner = self._runner()
            if runner is not None:
                runner.rows += 1
        elif kind == 0x54 and head is not None and head.kind != "describe":  # 'T' RowDescription
            runner = self._runner()
            if runner is not None:
                runner.result = True
        elif kind == 0x48:  # 'H' CopyOutResponse: COPY ... TO STDOUT sends rows (its tag counts them)
            runner = self._runner()
            if runner is not None:
                runner.copy_out = True
        elif kind == 0x45:  # 'E' ErrorResponse
            self._error(f, _error_fields(data[5:]))
        elif kind == 0x5A:  # 'Z' ReadyForQuery: everything up to a Sync or Query is answered
            self._ready()
        elif head is not None:
            if kind == 0x31:  # '1' ParseComplete
                self._pop("parse")
            elif kind == 0x32:  # '2' BindComplete
                self._pop("bind")
            elif kind == 0x33:  # '3' CloseComplete
                self._pop("close")
            elif kind in b"Tn" and head.kind == "describe":  # row shape or NoData ends a Describe
                items.popleft()
                runner = self._runner()
                if kind == 0x54 and runner is not None and runner.kind == "execute":
                    runner.result = True  # Describe portal: the rows of the Execute behind it

    def _pop(self, kind: str) -> None:
        if self._items and self._items[0].kind == kind:
            self._items.popleft()
        else:
            self.stats.extra["mismatched"] = self.stats.extra.get("mismatched", 0) + 1

    def _runner(self) -> Optional[_Item]:
        """The query or Execute whose results are arriving (the first one waiting)."""
        for item in self._items:
            if item.kind in ("query", "execute"):
                return item
            if item.kind == "sync":
                return None
        return None

    def _complete(self, f: Frame, tag: str, error: Optional[tuple[str, str]]) -> None:
        items = self._items
        while items and items[0].kind not in ("query", "execute"):
            if items[0].kind == "sync":
                break
            items.popleft()  # answers that never came (joined mid-way) or were not framed
            self.stats.extra["mismatched"] = self.stats.extra.get("mismatched", 0) + 1
        if not items or items[0].kind == "sync":
            self.stats.unpaired += 1
            return
        item = items[0]
        if item.kind == "execute":
            items.popleft()
            self._emit(item.sql, item.start_ns, f.end_ns, tag, _returned(item, tag), error,
                       item.req_size, item.resp_size, item.statement)  # fmt: skip
            return
        if not item.statements:
            item.statements = split_statements(item.sql or "")
        sql = item.statements[item.index] if item.index < len(item.statements) else None
        self._emit(sql, item.next_start, f.end_ns, tag, _returned(item, tag), error,
                   item.req_size if item.index == 0 else 0, item.resp_size)  # fmt: skip
        item.index += 1
        item.next_start = f.end_ns
        item.rows = 0
        item.result = False
        item.copy_out = False
        item.resp_size = 0

    def _error(self, f: Frame, fields: dict[str, str]) -> None:
        code = fields.get("C", "")
        error = (code or "ERROR", fields.get("M", ""))
        items = self._items
        if not items:
            self.stats.extra["errors_outside_calls"] = self.stats.extra.get("errors_outside_calls", 0) + 1
            return
        head = items[0]
        if head.kind in ("query", "execute"):
            self._complete(f, "", error)
            if head.kind == "execute":
                self._skip_to_sync()
            return
        if head.kind == "sync":
            self.stats.unpaired += 1
            return
        # Parse/Bind/Describe/Close failed: the Call is the Execute that would have run it.
        start = head.start_ns
        sql = head.sql
        statement = head.statement
        req = 0
        for item in items:
            if item.kind == "sync":
                break
            req += item.req_size
            if item.kind == "execute":
                sql = item.sql or sql
                statement = item.statement or statement
                break
        self._emit(sql, start, f.end_ns, "", -1, error, req, f.total, statement)
        while items and items[0].kind != "sync":
            if items.popleft().kind == "execute":
                break
        self._skip_to_sync()

    def _skip_to_sync(self) -> None:
        """After an error the server ignores everything up to the next Sync."""
        items = self._items
        while items and items[0].kind != "sync":
            if items.popleft().kind == "execute":
                self._skipped()

    def _ready(self) -> None:
        items = self._items
        while items:
            item = items.popleft()
            if item.kind == "query":
                if item.statements and item.index < len(item.statements):
                    for _ in range(len(item.statements) - item.index):
                        self._skipped()
                elif not item.statements:
                    self.stats.unpaired += 1
                return
            if item.kind == "sync":
                return
            if item.kind == "execute":
                self._skipped()

    def _skipped(self) -> None:
        self.stats.extra["skipped"] = self.stats.extra.get("skipped", 0) + 1

    # -- Calls ---------------------------------------------------------------------------------------
    def _emit(self, sql: Optional[str], start: int, end: int, tag: str, rows: int,
              error: Optional[tuple[str, str]], req_size: int, resp_size: int,
              statement: str = "") -> None:  # fmt: skip
        """One Call. A statement whose Parse was not seen (prepared before the capture started)
        has no text, and no operation but the one its CommandComplete tag names; its name says
        which statement it was (``hostagent.db.statement.name``)."""
        attrs: dict[str, object] = {"db.system.name": SYSTEM}
        if self._database:
            attrs["db.namespace"] = self._database
        op: Optional[str] = None
        coll: Optional[str] = None
        proc: Optional[str] = None
        if sql is not None:
            op, coll, proc, text = self._statements_seen.describe(sql)
            attrs["db.query.text"] = text
        elif statement:
            attrs[STATEMENT_NAME] = statement
        if op is None and tag:
            op = tag.split(" ", 1)[0]
        if op:
            attrs["db.operation.name"] = op
        if coll:
            attrs["db.collection.name"] = coll
        if proc:
            attrs["db.stored_procedure.name"] = proc
        words = tag.split(" ")
        if words[0] in ("SELECT", "FETCH") and words[-1].isdigit():
            attrs["db.response.returned_rows"] = int(words[-1])
        elif rows >= 0:  # rows -1: no result set (or its rows were not captured)
            attrs["db.response.returned_rows"] = rows
        error_type = None
        message = ""
        if error is not None:
            error_type, message = error
            attrs["db.response.status_code"] = error_type
        # Positional, in Call's field order: keywords cost ~0.6 us more per Call (model.Call)
        self._out.append(Call(
            SYSTEM, self.role, start, max(end, start),  # protocol, role, start_ns, end_ns
            span_name(SYSTEM, op, coll or proc), attrs,  # type: ignore[arg-type]  # name, attributes
            error_type, scrub_error_message(message, self._raw.on)[:256],  # error_type, status_message
            None, None, (), (), b"", b"",  # traceparent, tracestate, headers and bodies: none
            req_size, resp_size,  # request_size, response_size
        ))  # fmt: skip


def _returned(item: _Item, tag: str) -> int:
    """The rows ``item`` returned, -1 when none or not known. COPY ... TO STDOUT's are in CopyData
    (one per row in text and CSV, not in binary) and its tag says how many (``COPY n``); one that
    failed part-way says nothing. COPY FROM STDIN's tag counts rows written, as an INSERT's does."""
    if item.copy_out:
        words = tag.split(" ")
        return int(words[1]) if len(words) == 2 and words[0] == "COPY" and words[1].isdigit() else -1
    return item.rows if item.result else -1


def _bound(item: _Item, portal: tuple[str, Optional[str]]) -> _Item:
    """``item`` runs the statement bound to a portal: (statement name, its SQL if known)."""
    item.statement, item.sql = portal
    return item


def _typed_len(head: bytes, types: frozenset[int]) -> Optional[int]:
    if not head:
        return None
    if head[0] not in types:
        return -1
    if len(head) < 5:
        return None
    length = _int32(head, 1)
    if not 4 <= length < MAX_MESSAGE:
        return -1
    return 1 + length


def _whole_answer(data: bytes) -> bool:
    """Whether ``data`` is one or more complete backend messages and nothing more, the last a
    ReadyForQuery (idle, in a transaction or failed), as a read taken on message boundaries at the
    end of an answer shows them."""
    at, n = 0, len(data)
    while at < n:
        total = _typed_len(data[at : at + 5], BACKEND_TYPES)
        if total is None or total < 0 or at + total > n or FIXED_LENGTH.get(data[at], total - 1) != total - 1:
            return False
        at += total
    return n >= 6 and data[n - 6] == READY and data[n - 1] in b"ITE"


def _cstr(b: bytes) -> tuple[str, bytes]:
    """A NUL-terminated string (UTF-8, the only client encoding drivers use) and what follows."""
    end = b.find(b"\x00")
    if end < 0:
        return b.decode("utf-8", "replace"), b""
    return b[:end].decode("utf-8", "replace"), b[end + 1 :]


def _error_fields(body: bytes) -> dict[str, str]:
    """ErrorResponse fields: one type byte ('C' SQLSTATE, 'M' message...) and a string each."""
    out: dict[str, str] = {}
    for part in body.split(b"\x00"):
        if part:
            out[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return out


def new_parser(raw_sql: Union[bool, RawSql] = False) -> PostgresParser:
    return PostgresParser(raw_sql=raw_sql)


SPEC = ProtocolSpec(name=SYSTEM, probe="postgres", looks_like=looks_like, new_parser=new_parser)
