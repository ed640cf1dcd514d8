"""MySQL / MariaDB client/server protocol (https://dev.mysql.com/doc/dev/mysql-server/latest/
PAGE_PROTOCOL.html, https://mariadb.com/kb/en/clientserver-protocol/): segments -> Calls.

Packets are 3-byte little-endian length + sequence id. The server speaks first (handshake v10
greeting: its version says MySQL or MariaDB, hence ``db.system.name``); the client answers with a
HandshakeResponse41 (the database when CLIENT_CONNECT_WITH_DB) or an SSLRequest (then TLS:
``upgraded`` is set and the capture stage mutes the connection). In the command phase every
client packet with sequence id 0 is a command; the server's answer to it is read packet by packet.

What becomes a Call: each statement of a COM_QUERY (one per result: several with
CLIENT_MULTI_STATEMENTS, as the server runs them; a stored procedure's many results stay in one
Call) and each COM_STMT_EXECUTE (its SQL from the COM_STMT_PREPARE whose OK gave the statement
id). A failing COM_STMT_PREPARE is a Call too (the statement was sent and failed). COM_INIT_DB
(on OK: the new ``db.namespace``), COM_PING, COM_STMT_RESET/CLOSE, COM_QUIT make none.

Result sets: column count, column definitions, an EOF unless CLIENT_DEPRECATE_EOF, rows, then an
EOF or OK terminator (0xFE, shorter than a 16 MiB packet: a row cannot be), whose status says
whether more results follow. A connection first seen mid-way has unknown capabilities; EOF (5
bytes) and OK-as-terminator (7 or more) still tell themselves apart by length. Such a connection
is recognised by its client's next command, prepared-statement commands included (``looks_like``):
a COM_STMT_EXECUTE of a statement prepared before the capture started has no text and no
operation (neither can be known), only ``hostagent.db.statement.id``.

MySQL or MariaDB: only the greeting says (MariaDB's version reads ``5.5.5-10.11.6-MariaDB...``).
After it, both speak the same protocol: the same commands, OK/EOF/ERR packets, status flags and
error codes for what ordinary clients do; what only MariaDB sends (COM_STMT_BULK_EXECUTE, progress
reports, extended column metadata, the ANSI_QUOTES status flag) appears only with clients or
settings that ask for it, and another connection's greeting to the same address may be another
server (another network namespace). So a connection whose greeting was not seen says
``db.system.name`` "mysql", the protocol's, with ``hostagent.db.system.inferred`` true: it may
be a MariaDB server, and no span claims what the wire did not say - until a result's column
definitions carry MariaDB's extended type info (``_mariadb_column``): from then on "mariadb".
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
    use_database,
)

MAX_PAYLOAD = 0xFFFFFF  # a payload this long continues in the next packet
KEEP_CLIENT = 16 * 1024
KEEP_SERVER = 1024
MAX_STATEMENTS = 256  # prepared statements remembered (text capped at MAX_TEXT)
MAX_PENDING = 256
MAX_TEXT = 4096
MAX_CACHE = 64
MIN_PREFIX = 64  # the fewest bytes of a write the kernel copies ([probes] payload_bytes)
STATEMENT_ID = "hostagent.db.statement.id"
# db.system.name is "mysql" by default, not read from a greeting (see the module docstring)
SYSTEM_INFERRED = "hostagent.db.system.inferred"

CLIENT_CONNECT_WITH_DB = 0x00000008
CLIENT_PROTOCOL_41 = 0x00000200
CLIENT_SSL = 0x00000800
CLIENT_SECURE_CONNECTION = 0x00008000
CLIENT_PLUGIN_AUTH_LENENC = 0x00200000
CLIENT_DEPRECATE_EOF = 0x01000000
SERVER_MORE_RESULTS_EXISTS = 0x0008

COM_QUIT, COM_INIT_DB, COM_QUERY, COM_FIELD_LIST = 0x01, 0x02, 0x03, 0x04
COM_STATISTICS, COM_CHANGE_USER = 0x09, 0x11
COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID = 0x12, 0x1E
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA = 0x16, 0x17, 0x18
COM_STMT_CLOSE, COM_STMT_RESET, COM_SET_OPTION, COM_STMT_FETCH = 0x19, 0x1A, 0x1B, 0x1C
COM_PING, COM_RESET_CONNECTION = 0x0E, 0x1F
NO_RESPONSE = frozenset({COM_QUIT, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE})
COMMANDS = frozenset(range(0x00, 0x20)) - {0x00}

# Per-command answer states.
_START, _COLDEFS, _AFTER_COLDEFS, _ROWS, _INFILE, _PREP_DEFS, _PREP_EOF, _UNTIL_EOF, _ONE = range(9)


def _le(b: bytes, at: int, n: int) -> int:
    return int.from_bytes(b[at : at + n], "little")


def _lenenc(b: bytes, at: int) -> tuple[int, int]:
    """A length-encoded integer at ``at``: (value, next offset); (-1, at) when unreadable."""
    if at >= len(b):
        return -1, at
    first = b[at]
    if first < 0xFB:
        return first, at + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None or at + 1 + size > len(b):
        return -1, at
    return _le(b, at + 1, size), at + 1 + size


def _greeting_version(data: bytes) -> Optional[str]:
    """The server version when ``data`` starts with a handshake v10 greeting packet."""
    if len(data) < 10 or data[3] != 0 or data[4] != 0x0A:
        return None
    length = _le(data, 0, 3)
    end = data.find(b"\x00", 5, 5 + 64)
    if not 20 <= length <= 1024 or end < 7:
        return None
    version = data[5:end]
    if not version[:1].isdigit() or not all(0x20 <= c < 0x7F for c in version):
        return None
    return version.decode("ascii")


def _sql_like(text: bytes) -> bool:
    text = text[:64].lstrip()
    return bool(text) and all(c >= 0x20 or c in (9, 10, 13) for c in text) and (
        text[:1].isalpha() or text[:1] == b"(" or text[:2] in (b"/*", b"--") or text[:1] == b"#"
    )


def looks_like(data: bytes, direction: Direction) -> bool:
    """A server greeting (the server speaks first), or a command of a connection first seen mid-way
    (``_mid_stream_command``)."""
    return _greeting_version(data) is not None or _mid_stream_command(data)


def _mid_stream_command(data: bytes) -> bool:
    """Whether ``data`` starts with a client command packet (sequence id 0) laid out as its code
    says: COM_QUERY / COM_STMT_PREPARE of SQL text, or what a pool whose statements were prepared
    before the agent started keeps sending (COM_STMT_EXECUTE / RESET / CLOSE / FETCH /
    SEND_LONG_DATA, COM_PING, COM_INIT_DB, COM_SET_OPTION, COM_RESET_CONNECTION), each with its
    fixed length or fields checked, so that other protocols are not taken for MySQL. The classic
    protocol sends one command per answer: more bytes after the packet may only be another
    command after one that has no answer (CLOSE, SEND_LONG_DATA)."""
    if len(data) < 5 or data[3] != 0:
        return False
    length = _le(data, 0, 3)
    payload = data[4 : 4 + length]
    code = data[4]
    if code in (COM_QUERY, COM_STMT_PREPARE):
        # a long statement may be cut by the capture; a short one is the whole write
        return length >= 2 and not (len(data) > 4 + length and length < 64) and _sql_like(payload[1:])
    if not _command_shape(code, length, payload):
        return False
    after = data[4 + length :]
    if not after:
        return True
    return code in (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA) and _mid_stream_command(after)


# The payload length of commands that have one; COM_STMT_EXECUTE and SEND_LONG_DATA: a minimum.
_FIXED = {COM_PING: 1, COM_RESET_CONNECTION: 1, COM_SET_OPTION: 3, COM_STMT_CLOSE: 5, COM_STMT_RESET: 5,
          COM_STMT_FETCH: 9}  # fmt: skip


def _command_shape(code: int, length: int, payload: bytes) -> bool:
    fixed = _FIXED.get(code)
    if fixed is not None:
        if length != fixed or len(payload) != length:
            return False
        if code == COM_SET_OPTION:
            return payload[1:] in (b"\x00\x00", b"\x01\x00")  # MULTI_STATEMENTS on / off
        return fixed < 5 or _le(payload, 1, 4) != 0  # statement ids start at 1
    if code == COM_STMT_EXECUTE:
        # statement id, flags (cursor type, PARAMETER_COUNT_AVAILABLE), iteration count: always 1
        return length >= 10 and len(payload) >= 10 and _le(payload, 1, 4) != 0 and payload[5] < 0x10 and (
            _le(payload, 6, 4) == 1
        )
    if code == COM_STMT_SEND_LONG_DATA:
        # statement id, parameter id, data. Bytes short of the declared length were cut by the
        # capture, which copies at least MIN_PREFIX bytes of a write: fewer are a whole write of
        # something else (a 24-byte PostgreSQL Query, 'Q' 0 0 0 24, reads as this command's header)
        return length >= 7 and len(payload) >= 7 and _le(payload, 1, 4) != 0 and (
            len(payload) == length or 4 + len(payload) >= MIN_PREFIX
        )
    if code == COM_INIT_DB:
        name = payload[1:]
        return 2 <= length <= 65 and len(payload) == length and all(0x20 < c != 0x60 for c in name)
    return False


class _Command:
    __slots__ = ("arg", "code", "index", "kind_state", "next_start", "req_size", "resp_size", "result",
                 "results_end", "rows", "sql", "start_ns", "statements")  # fmt: skip

    def __init__(self, code: int, start_ns: int, sql: Optional[str], arg: object, req_size: int) -> None:
        self.code = code
        self.start_ns = start_ns
        self.next_start = start_ns
        self.sql = sql
        self.arg = arg  # COM_INIT_DB: database; COM_STMT_EXECUTE: statement id
        self.statements: list[str] = []
        self.index = 0
        self.rows = 0
        self.result = False  # the current result is a result set (rows counted), not an OK
        self.kind_state = _START
        self.req_size = req_size
        self.resp_size = 0
        # The end of a result of its last statement that said more results follow (a CALL's
        # rows, before the status that ends the CALL); 0: none. See MysqlParser.close.
        self.results_end = 0


class MysqlParser:
    """Per-connection MySQL/MariaDB decoder; ``raw_sql`` on keeps db.query.text unsanitised (a
    ``RawSql`` switch is read per call: a settings change reaches connections already open)."""

    def __init__(self, raw_sql: Union[bool, RawSql] = False) -> None:
        self._raw = raw_sql_switch(raw_sql)
        self.stats = ParserStats()
        self.upgraded = False  # TLS (or a binlog stream): stop parsing
        self.system = "mysql"
        # ``system`` is known: from the greeting, or from what only MariaDB sends (_mariadb_only)
        self._system_known = False
        self._columns_seen = False  # a column definition was looked at (_column_says)
        self._roles = RoleGuess(self._guess_client_dir, self.stats)
        self._cl = LengthFramer(KEEP_CLIENT)
        self._sv = LengthFramer(KEEP_SERVER)
        self._phase = "command"  # greeting -> auth -> command
        self._server_caps = 0
        self._client_caps = 0
        self._database: Optional[str] = None
        self._statements: OrderedDict[int, str] = OrderedDict()
        self._pending: deque[_Command] = deque()
        self._cont = {Direction.EGRESS: False, Direction.INGRESS: False}
        self._coldefs = 0
        self._prep: list[int] = []  # definition groups still to skip after a prepare OK
        self._statements_seen = StatementCache("mysql", self._raw, MAX_CACHE, MAX_TEXT)
        self._out: list[Call] = []
        # Framing lost inside a result (read in pieces longer than the captured prefix, by reads
        # that start anywhere in a packet): until the client's next packet, server bytes only
        # count towards the waiting command (its size, its end); see _run_aground.
        self._adrift = False
        self._adrift_end = 0
        self._last_server_ns = 0  # when server bytes were last seen (_lost_in_answer)

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
            self._pending.clear()
            self._cl.drop()
            self._sv.drop()
        return self._take()

    def _take(self) -> list[Call]:
        out, self._out = self._out, []
        return out

    def close(self, ts_ns: int) -> list[Call]:
        """The connection closed. A command whose last statement's results came, all but the
        status that ends them, is a call all the same, ending with its last result: PyMySQL's
        callproc() leaves a CALL's last OK unread until nextset() or the next query, and a
        process that exits first never reads it when the server wrote it after the rows. What
        else waits is counted unpaired."""
        head = self._pending[0] if self._pending else None
        if head is not None and head.results_end and head.kind_state == _START:
            self._pending.popleft()
            statements = self._statements_of(head)
            sql = statements[head.index] if head.index < len(statements) else head.sql
            self._emit(head, head.results_end, None, sql)
        self._drop_pending()
        return self._take()

    def _drop_pending(self) -> None:
        self.stats.unpaired += sum(1 for c in self._pending if c.code in (COM_QUERY, COM_STMT_EXECUTE))
        self._pending.clear()

    def lost(self) -> list[Call]:
        """Calls of this connection were lost in the kernel before the next bytes: commands
        waiting may have lost their answers (dropped, counted as unpaired, as at close), so that
        no later answer completes the wrong command; a result set being read is abandoned and
        both framers start again at the next segment. Prepared statements stay known. Unlike at
        close, a CALL whose last status was not seen is dropped too: what came after is unknown."""
        self._drop_pending()
        self._adrift = False
        self._cont = {Direction.EGRESS: False, Direction.INGRESS: False}
        self._coldefs = 0
        self._prep = []
        self._cl.drop()
        self._sv.drop()
        return self._take()

    @property
    def role(self) -> Role:
        return self._roles.role

    def _guess_client_dir(self, data: bytes, direction: Direction) -> Optional[Direction]:
        other = Direction.INGRESS if direction == Direction.EGRESS else Direction.EGRESS
        if len(data) < 5:
            return None
        if data[3] == 0 and data[4] == 0x0A:  # a greeting (COM_PROCESS_INFO is long gone)
            if _greeting_version(data) is None:
                return None if len(data) < 64 and b"\x00" not in data[5:] else other
            self._phase = "greeting"
            return other
        if data[3] == 0 and data[4] in COMMANDS:
            return direction
        return other  # sequence id > 0, or 0xFF: an answer

    # -- framing -----------------------------------------------------------------------------------
    def _consume(self, seg: Segment) -> None:
        client = seg.direction == self._roles.client
        framer = self._cl if client else self._sv
        if self._adrift:
            if not client:
                self._adrift_end = self._last_server_ns = seg.ts_ns
                if self._pending:
                    self._pending[0].resp_size += seg.size
                return
            self._run_aground()
        if not client:
            if self._lost_in_answer(seg):
                self._realign()
            self._last_server_ns = seg.ts_ns
        if framer.push(seg.data, seg.size, seg.ts_ns):
            self.stats.resyncs += 1
        while not self.upgraded:
            frame = framer.next(_packet_len)
            if frame is None:
                break
            if frame.truncated:
                self.stats.truncated += 1
            continued = self._cont[seg.direction]
            self._cont[seg.direction] = frame.total - 4 == MAX_PAYLOAD
            if continued:
                continue  # the tail of a 16 MiB+ payload: nothing to read in it
            if client:
                self._client_packet(frame)
            else:
                self._server_packet(frame)
        if not client and framer.lost and self._phase == "command" and self._pending:
            self._adrift = True  # the answer goes on past a boundary the capture did not see
            self._adrift_end = seg.ts_ns

    def _lost_in_answer(self, seg: Segment) -> bool:
        """Whether server bytes were lost without the capture stage being told (``lost()``; not
        every loss in the kernel is reported, bpf/capture.c says which are not): any three bytes
        read as a packet length, so the framer would skip up to 16 MiB of later answers from
        the wrong place, or a result whose terminator was lost would take the next answers for
        its rows, pairing every later command of a pooled connection with the wrong answer. Said
        by the two directions together, as for Redis: the client sent a command after the last
        server bytes came while a command sent before is being answered (a pipelining client
        sends before the answer's first bytes, or its next bytes continue that answer), and this
        segment, whole, is one or more complete answers (_whole_answer)."""
        pending, sv = self._pending, self._sv
        return (
            len(pending) > 1
            and (pending[0].resp_size > 0 or sv.skip > 0 or sv.buffered > 0)
            and pending[0].start_ns <= self._last_server_ns < pending[-1].start_ns
            and seg.size == len(seg.data)
            and _whole_answer(seg.data)
        )

    def _realign(self) -> None:
        """Frame the server's bytes afresh from this segment (``_lost_in_answer``). The commands
        sent before the last server bytes came may have had their answers in what was lost:
        dropped, counted as unpaired, never paired with a later answer; the segment answers the
        commands sent since."""
        self.stats.resyncs += 1
        pending = self._pending
        while pending and pending[0].start_ns <= self._last_server_ns:
            if pending.popleft().code in (COM_QUERY, COM_STMT_EXECUTE):
                self.stats.unpaired += 1
        self._forget_answer()
        self._sv.restart()

    def _forget_answer(self) -> None:
        """What the server framer and the answer being read held: the next answer starts anew."""
        self._cont[Direction.EGRESS if self._roles.client == Direction.INGRESS else Direction.INGRESS] = False
        self._coldefs = 0
        self._prep = []

    def _run_aground(self) -> None:
        """The client sends again: the answer it waited for is over (the classic protocol reads
        a result whole before the next command). The command ends with the last server bytes
        seen; its rows and outcome were in bytes not captured, so the span says neither. What
        waited behind it is dropped (unpaired); the server framer starts again at the next
        segment, the start of the next answer."""
        self._adrift = False
        if self._pending:
            cmd = self._pending.popleft()
            if cmd.code in (COM_QUERY, COM_STMT_EXECUTE):
                statements = self._statements_of(cmd)
                sql = statements[cmd.index] if cmd.index < len(statements) else cmd.sql
                cmd.rows = 0  # counted before the capture lost the result: a part only
                cmd.result = False
                self._emit(cmd, self._adrift_end, None, sql)
                self.stats.truncated += 1
            self.stats.unpaired += sum(1 for c in self._pending if c.code in (COM_QUERY, COM_STMT_EXECUTE))
            self._pending.clear()
        self._forget_answer()
        self._sv.drop()

    # -- client ------------------------------------------------------------------------------------
    def _client_packet(self, f: Frame) -> None:
        data = f.data
        seq = data[3]
        payload = data[4:]
        if self._phase == "greeting":
            if seq == 1 and len(payload) >= 32:
                self._handshake_response(payload)
            return
        if self._phase == "auth" or seq != 0 or not payload:
            return  # auth-switch answers, LOCAL INFILE contents
        code = payload[0]
        sql: Optional[str] = None
        arg: object = None
        if code in (COM_QUERY, COM_STMT_PREPARE):
            sql = payload[1:].decode("utf-8", "replace")
        elif code == COM_STMT_EXECUTE and len(payload) >= 5:
            arg = _le(payload, 1, 4)
            sql = self._statements.get(arg)  # type: ignore[call-overload]
        elif code == COM_STMT_CLOSE and len(payload) >= 5:
            self._statements.pop(_le(payload, 1, 4), None)
        elif code == COM_INIT_DB:
            arg = payload[1:].decode("utf-8", "replace")
        elif code in (COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID):
            self.upgraded = True  # a replication stream, not calls
            return
        if code in NO_RESPONSE:
            return
        if code == COM_CHANGE_USER:
            self._phase = "auth"
        self._pending.append(_Command(code, f.start_ns, sql, arg, f.total))
        if len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self.stats.unpaired += 1

    def _handshake_response(self, payload: bytes) -> None:
        caps = _le(payload, 0, 4)
        self._client_caps = caps
        if caps & CLIENT_SSL and len(payload) == 32:  # SSLRequest: TLS from here on
            self.upgraded = True
            return
        self._phase = "auth"
        at = payload.find(b"\x00", 32)  # user name
        if at < 0:
            return
        at += 1
        if caps & CLIENT_PLUGIN_AUTH_LENENC:
            n, at = _lenenc(payload, at)
            at += max(n, 0)
        elif caps & CLIENT_SECURE_CONNECTION:
            at += 1 + (payload[at] if at < len(payload) else 0)
        else:
            end = payload.find(b"\x00", at)
            at = end + 1 if end >= 0 else len(payload)
        if caps & CLIENT_CONNECT_WITH_DB and at < len(payload):
            end = payload.find(b"\x00", at)
            db = payload[at : end if end >= 0 else len(payload)]
            if db:
                self._database = db.decode("utf-8", "replace")

    # -- server ------------------------------------------------------------------------------------
    @property
    def _deprecate_eof(self) -> Optional[bool]:
        if not self._client_caps:
            return None  # first seen mid-way: tell by packet length
        return bool(self._client_caps & self._server_caps & CLIENT_DEPRECATE_EOF)

    def _server_packet(self, f: Frame) -> None:
        payload = f.data[4:]
        if not payload:
            return
        if self._phase == "greeting":
            if f.data[3] == 0 and payload[0] == 0x0A:
                self._greeting(payload)
            return
        if self._phase == "auth":
            if payload[0] in (0x00, 0xFF):  # the end of authentication
                self._phase = "command"
                if self._pending and self._pending[0].code == COM_CHANGE_USER:
                    self._pending.popleft()
            return
        if not self._pending:
            self.stats.unpaired += 1
            return
        cmd = self._pending[0]
        cmd.resp_size += f.total
        self._answer(cmd, f, payload)

    def _greeting(self, payload: bytes) -> None:
        end = payload.find(b"\x00", 1)
        version = payload[1:end].decode("ascii", "replace")
        self._system_known = True
        if "mariadb" in version.lower():
            self.system = "mariadb"
        at = end + 1 + 4 + 8 + 1  # thread id, auth data part 1, filler
        caps = _le(payload, at, 2)
        if len(payload) >= at + 2 + 1 + 2 + 2:
            caps |= _le(payload, at + 5, 2) << 16
        self._server_caps = caps

    def _answer(self, cmd: _Command, f: Frame, p: bytes) -> None:
        state = cmd.kind_state
        first = p[0]
        code = cmd.code
        if state == _START:
            if first == 0xFF:
                self._finish(cmd, f, _err(p))
            elif code == COM_QUERY and first == 0xFB:
                cmd.kind_state = _INFILE  # LOCAL INFILE: the file follows, then OK/ERR
            elif code == COM_STMT_PREPARE:
                self._prepare_ok(cmd, f, p)
            elif code in (COM_QUERY, COM_STMT_EXECUTE) and first not in (0x00, 0xFE):
                count, at = _lenenc(p, 0)
                self._coldefs = max(count, 0)
                cmd.result = True
                metadata_follows = p[at] if at < len(p) else 1  # MariaDB metadata cache
                cmd.kind_state = _COLDEFS if metadata_follows and self._coldefs else _AFTER_COLDEFS
            elif code in (COM_QUERY, COM_STMT_EXECUTE):
                self._result_end(cmd, f, p)
            elif code in (COM_FIELD_LIST, COM_STMT_FETCH):
                cmd.kind_state = _UNTIL_EOF
                self._answer(cmd, f, p)
            else:  # one packet: OK / EOF / statistics string
                if code == COM_INIT_DB and first == 0x00 and isinstance(cmd.arg, str):
                    self._database = cmd.arg
                self._pending.popleft()
        elif state == _COLDEFS:
            if not self._columns_seen:
                self._column_says(p)
            self._coldefs -= 1
            if self._coldefs <= 0:
                cmd.kind_state = _AFTER_COLDEFS
        elif state == _AFTER_COLDEFS:
            cmd.kind_state = _ROWS
            if not (first == 0xFE and len(p) == 5 and self._deprecate_eof is not True):
                self._row_or_end(cmd, f, p)
        elif state == _ROWS:
            self._row_or_end(cmd, f, p)
        elif state == _INFILE:
            if first == 0xFF:
                self._finish(cmd, f, _err(p))
            elif first == 0x00:
                self._result_end(cmd, f, p)
        elif state in (_PREP_DEFS, _PREP_EOF):
            self._prepare_defs(cmd, f, p)
        elif state == _UNTIL_EOF:
            if first == 0xFF or (first == 0xFE and len(p) < MAX_PAYLOAD):
                self._pending.popleft()

    def _row_or_end(self, cmd: _Command, f: Frame, p: bytes) -> None:
        first = p[0]
        if first == 0xFF:
            self._finish(cmd, f, _err(p))
        elif first == 0xFE and len(p) < MAX_PAYLOAD:
            self._result_end(cmd, f, p)
        else:
            cmd.rows += 1

    def _result_end(self, cmd: _Command, f: Frame, p: bytes) -> None:
        """An OK or EOF that ends one result; more may follow (multi-statements, procedures)."""
        if p[0] == 0xFE and len(p) <= 5:
            status = _le(p, 3, 2)  # EOF: warnings, status
        else:
            _, at = _lenenc(p, 1)
            _, at = _lenenc(p, at)
            status = _le(p, at, 2)
        more = bool(status & SERVER_MORE_RESULTS_EXISTS)
        if cmd.code == COM_QUERY and p[0] == 0x00 and cmd.sql and not more:
            db = use_database(cmd.sql)
            if db:
                self._database = db
        if more:
            statements = self._statements_of(cmd)
            if cmd.index < len(statements) - 1:  # the next result is the next statement's
                self._emit(cmd, f.end_ns, None, statements[cmd.index])
                cmd.index += 1
            else:
                cmd.results_end = f.end_ns
            cmd.kind_state = _START
            return
        self._finish(cmd, f, None)

    def _finish(self, cmd: _Command, f: Frame, error: Optional[tuple[str, str]]) -> None:
        statements = self._statements_of(cmd)
        sql = statements[cmd.index] if cmd.index < len(statements) else cmd.sql
        self._emit(cmd, f.end_ns, error, sql)
        skipped = len(statements) - cmd.index - 1
        if skipped > 0:
            self.stats.extra["skipped"] = self.stats.extra.get("skipped", 0) + skipped
        if self._pending and self._pending[0] is cmd:
            self._pending.popleft()

    def _statements_of(self, cmd: _Command) -> list[str]:
        if cmd.code != COM_QUERY or cmd.sql is None:
            return [cmd.sql] if cmd.sql is not None else []
        if not cmd.statements:
            cmd.statements = split_statements(cmd.sql, "mysql")
        return cmd.statements

    # -- prepared statements ---------------------------------------------------------------------
    def _prepare_ok(self, cmd: _Command, f: Frame, p: bytes) -> None:
        if p[0] != 0x00 or len(p) < 9:
            self._pending.popleft()
            return
        stmt_id = _le(p, 1, 4)
        if cmd.sql is not None:
            self._statements[stmt_id] = cmd.sql[:MAX_TEXT]
            if len(self._statements) > MAX_STATEMENTS:
                self._statements.popitem(last=False)
        columns, params = _le(p, 5, 2), _le(p, 7, 2)
        self._prep = [n for n in (params, columns) if n]
        if not self._prep:
            self._pending.popleft()
            return
        self._coldefs = self._prep.pop(0)
        cmd.kind_state = _PREP_DEFS

    def _column_says(self, p: bytes) -> None:
        """The connection's first column definition: MariaDB if only it sends it. Extended
        metadata, asked for at the handshake, is in every column definition or in none, so one
        is enough (a pool's connections picked up mid-way are not parsed again and again)."""
        self._columns_seen = True
        if not self._system_known and _mariadb_column(p):
            self.system = "mariadb"
            self._system_known = True

    def _prepare_defs(self, cmd: _Command, f: Frame, p: bytes) -> None:
        if cmd.kind_state == _PREP_DEFS:
            if not self._columns_seen:
                self._column_says(p)
            self._coldefs -= 1
            if self._coldefs > 0:
                return
            if self._deprecate_eof is True:
                self._next_prep_group(cmd)
            else:
                cmd.kind_state = _PREP_EOF
            return
        # _PREP_EOF: an EOF closes the group; with unknown capabilities it may be absent
        is_eof = p[0] == 0xFE and len(p) == 5
        self._next_prep_group(cmd)
        if not is_eof and self._pending and self._pending[0] is not cmd:
            self._answer(self._pending[0], f, p)  # it was already the next command's answer

    def _next_prep_group(self, cmd: _Command) -> None:
        if self._prep:
            self._coldefs = self._prep.pop(0)
            cmd.kind_state = _PREP_DEFS
        else:
            self._pending.popleft()

    # -- Calls -----------------------------------------------------------------------------------
    def _emit(self, cmd: _Command, end: int, error: Optional[tuple[str, str]], sql: Optional[str]) -> None:
        if cmd.code == COM_STMT_PREPARE and error is None:
            return  # a successful prepare is not an execution
        attrs: dict[str, object] = {"db.system.name": self.system}
        if not self._system_known:
            attrs[SYSTEM_INFERRED] = True
        if self._database:
            attrs["db.namespace"] = self._database
        op = coll = proc = None
        if sql is not None:
            op, coll, proc, text = self._statements_seen.describe(sql)
            attrs["db.query.text"] = text
        elif cmd.code == COM_STMT_EXECUTE and isinstance(cmd.arg, int):
            attrs[STATEMENT_ID] = cmd.arg  # prepared before the capture started: no text, no guess
        if op:
            attrs["db.operation.name"] = op
        if coll:
            attrs["db.collection.name"] = coll
        if proc:
            attrs["db.stored_procedure.name"] = proc
        if cmd.result:  # a result set without rows returned 0 rows; an OK returned none
            attrs["db.response.returned_rows"] = cmd.rows
        error_type = None
        message = ""
        if error is not None:
            error_type, message = error
            attrs["db.response.status_code"] = error_type
        start = cmd.next_start
        # Positional, in Call's field order: keywords cost ~0.6 us more per Call (model.Call)
        self._out.append(Call(
            "mysql", self.role, start, max(start, end),  # protocol, role, start_ns, end_ns
            span_name(self.system, op, coll or proc), attrs,  # type: ignore[arg-type]  # name, attributes
            error_type, scrub_error_message(message, self._raw.on)[:256],  # error_type, status_message
            None, None, (), (), b"", b"",  # traceparent, tracestate, headers and bodies: none
            cmd.req_size if cmd.index == 0 else 0, cmd.resp_size,  # request_size, response_size
        ))  # fmt: skip
        cmd.next_start = end
        cmd.rows = 0
        cmd.result = False
        cmd.resp_size = 0


def _mariadb_column(p: bytes) -> bool:
    """A column definition only a MariaDB server sends: with extended type info (a lenenc string
    between the column's original name and the fixed fields, MARIADB_CLIENT_EXTENDED_METADATA,
    which MariaDB's Connector/C 3.3+ and Connector/J 3 ask for). A MySQL server always puts the
    fixed fields' length, 0x0C, right after the name; this must be any other byte, a whole string,
    then 0x0C and exactly the 12 bytes of fixed fields (charset, length, type, flags, decimals, 2
    unused)."""
    if not p.startswith(b"\x03def"):  # the catalog, always "def"
        return False
    at = 4
    for _ in range(5):  # schema, table alias, table, column alias, column
        n, at = _lenenc(p, at)
        if n < 0:
            return False
        at += n
    if at >= len(p) or p[at] == 0x0C:
        return False
    n, at = _lenenc(p, at)
    if n < 0:
        return False
    at += n
    return at + 13 == len(p) and p[at] == 0x0C


def _whole_answer(data: bytes) -> bool:
    """Whether ``data`` is one or more complete answers to commands and nothing more, as a read
    taken on packet boundaries at the end of an answer shows them: packets whose sequence ids
    count up from 1 (0 is the command's), each answer ending with an OK, EOF or ERR packet."""
    at, n, seq, ended = 0, len(data), 1, False
    while at + 4 < n:
        length = _le(data, at, 3)
        if not length or (data[at + 3] != seq % 256 and not (ended and data[at + 3] == 1)):
            return False
        first = data[at + 4]
        ended = (first == 0x00 and length >= 7) or (first == 0xFF and length >= 3) or (first == 0xFE and length < 9)
        seq = data[at + 3] + 1
        at += 4 + length
    return at == n and ended


def _packet_len(head: bytes) -> Optional[int]:
    if len(head) < 4:
        return None
    return 4 + _le(head, 0, 3)


def _err(p: bytes) -> tuple[str, str]:
    """ERR packet: 0xFF, error code, ['#' SQLSTATE], message -> (code as string, message)."""
    code = str(_le(p, 1, 2))
    rest = p[3:]
    if rest[:1] == b"#":
        rest = rest[6:]
    return code, rest.decode("utf-8", "replace")


def new_parser(raw_sql: Union[bool, RawSql] = False) -> MysqlParser:
    return MysqlParser(raw_sql=raw_sql)


SPEC = ProtocolSpec(name="mysql", probe="mysql", looks_like=looks_like, new_parser=new_parser)
