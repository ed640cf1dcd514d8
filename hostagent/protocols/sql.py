"""SQL text helpers shared by the PostgreSQL and MySQL parsers: tokenise, split, sanitise, name.

All three jobs run over one tokenizer so they agree on what is a literal: a ``;`` inside a string
or a comment never splits a statement, a ``1`` inside ``t1`` is never a literal.

- ``split_statements``: the statements of a multi-statement text (PostgreSQL simple Query,
  MySQL with CLIENT_MULTI_STATEMENTS), as the server will run them: empty statements dropped.
- ``sanitize``: ``db.query.text`` as the semantic conventions want it by default: every string,
  number, hex, bit or dollar-quoted literal replaced by ``?`` (``IN (1, 2)`` -> ``IN (?, ?)``);
  identifiers, keywords, comments and bind markers (``$1``, ``?``) are kept.
- ``statement_shape``: ``db.operation.name`` (the first operation keyword, upper case as the
  server knows it and the conventions show it, whatever case it was sent in),
  ``db.collection.name`` (the first table the statement works on, as written, with any schema
  prefix) when the statement shape makes it certain, and ``db.stored_procedure.name`` (the
  procedure a ``CALL`` runs); ``None`` for each one not known.

Text cut short by the capture (an unterminated string at the end) is handled: the unterminated
literal is still a literal. Dialects: ``"postgresql"`` (double quotes are identifiers,
``E''`` escapes, ``$tag$`` strings) and ``"mysql"`` (double quotes are strings, backslash
escapes, backtick identifiers, ``#`` comments).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, NamedTuple, Optional, Union

# Token kinds.
WS, COMMENT, STRING, NUMBER, IDENT, QIDENT, PARAM, PUNCT = range(8)

_COMMON_TAIL = r"""
  | (?P<number>0[xX][0-9a-fA-F_]+|0[bB][01]+|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*)
  | (?P<punct>.)
"""

_PG = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|/\*(?s:.*?)(?:\*/|\Z))
  | (?P<string>[Ee]'(?:[^'\\]|\\.|'')*(?:'|\Z)
       |(?:[BbXxNn]|[Uu]&)?'(?:[^']|'')*(?:'|\Z)
       |(?P<dq>\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$)(?s:.*?)(?:(?P=dq)|\Z))
  | (?P<qident>"(?:[^"]|"")*(?:"|\Z))
  | (?P<param>\$\d+)
"""
    + _COMMON_TAIL,
    re.VERBOSE | re.DOTALL,
)

_MY = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--(?:[ \t][^\n]*|$|(?=\n))|\#[^\n]*|/\*(?s:.*?)(?:\*/|\Z))
  | (?P<string>(?:_[A-Za-z0-9]+|[NnXxBb])?'(?:[^'\\]|\\.|'')*(?:'|\Z)
       |(?:_[A-Za-z0-9]+)?"(?:[^"\\]|\\.|"")*(?:"|\Z))
  | (?P<qident>`(?:[^`]|``)*(?:`|\Z))
  | (?P<param>\?)
"""
    + _COMMON_TAIL,
    re.VERBOSE | re.DOTALL,
)

_KINDS = {"ws": WS, "comment": COMMENT, "string": STRING, "number": NUMBER, "ident": IDENT,
          "qident": QIDENT, "param": PARAM, "punct": PUNCT}  # fmt: skip

Token = tuple[int, str]


def tokenize(sql: str, dialect: str = "postgresql") -> list[Token]:
    """Every character of ``sql`` lands in exactly one token (joining them gives ``sql`` back)."""
    pattern = _MY if dialect == "mysql" else _PG
    out: list[Token] = []
    for m in pattern.finditer(sql):
        group = m.lastgroup
        if group == "dq":  # the inner named group of a dollar-quoted string
            group = "string"
        out.append((_KINDS[group or "punct"], m.group(0)))
    return out


# One pass of re.sub that only stops at what matters (comments and quoted identifiers are
# skipped whole so a quote inside them is not a string; literals become "?"). About 10x faster
# than tokenising every word; ``sanitize_by_tokens`` is the reference it is tested against.
_PG_SUB = re.compile(
    r"""
    (?P<keep>--[^\n]*|/\*(?s:.*?)(?:\*/|\Z)|"(?:[^"]|"")*(?:"|\Z)|\$\d+)
  | (?P<lit>(?:(?<![\w$\u0080-\uffff])[Ee]'(?:[^'\\]|\\.|'')*(?:'|\Z)
       |(?:(?<![\w$\u0080-\uffff])(?:[BbXxNn]|[Uu]&))?'(?:[^']|'')*(?:'|\Z)
       |(?<![\w$\u0080-\uffff])(?P<dq>\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$)(?s:.*?)(?:(?P=dq)|\Z)
       |(?<![\w$\u0080-\uffff])(?:0[xX][0-9a-fA-F_]+|0[bB][01]+|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)))
""",
    re.VERBOSE | re.DOTALL,
)
_MY_SUB = re.compile(
    r"""
    (?P<keep>--(?:[ \t][^\n]*|$|(?=\n))|\#[^\n]*|/\*(?s:.*?)(?:\*/|\Z)|`(?:[^`]|``)*(?:`|\Z))
  | (?P<lit>(?:(?:(?<![\w$\u0080-\uffff])(?:_[A-Za-z0-9]+|[NnXxBb]))?'(?:[^'\\]|\\.|'')*(?:'|\Z)
       |(?:(?<![\w$\u0080-\uffff])_[A-Za-z0-9]+)?"(?:[^"\\]|\\.|"")*(?:"|\Z)
       |(?<![\w$\u0080-\uffff])(?:0[xX][0-9a-fA-F_]+|0[bB][01]+|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)))
""",
    re.VERBOSE | re.DOTALL,
)


def _sub(m: re.Match[str]) -> str:
    return m.group(0) if m.group("keep") is not None else "?"


def sanitize(sql: str, dialect: str = "postgresql") -> str:
    """Replace every literal with ``?``."""
    return (_MY_SUB if dialect == "mysql" else _PG_SUB).sub(_sub, sql)


def sanitize_by_tokens(sql: str, dialect: str = "postgresql") -> str:
    """The slow reference for ``sanitize``: literal tokens replaced by ``?``."""
    return "".join("?" if kind in (STRING, NUMBER) else text for kind, text in tokenize(sql, dialect))


def split_statements(sql: str, dialect: str = "postgresql") -> list[str]:
    """The non-empty statements of ``sql``, stripped; ``[sql]`` when there are none.

    A text with nothing but whitespace and comments is one (empty) statement, which is what the
    server answers with EmptyQueryResponse (PostgreSQL).
    """
    if ";" not in sql:
        return [sql.strip()]  # the common case: no need to tokenise
    statements: list[str] = []
    current: list[str] = []
    meaningful = False
    for kind, text in tokenize(sql, dialect):
        if kind == PUNCT and text == ";":
            if meaningful:
                statements.append("".join(current).strip())
            current, meaningful = [], False
            continue
        current.append(text)
        if kind not in (WS, COMMENT):
            meaningful = True
    if meaningful:
        statements.append("".join(current).strip())
    return statements or [sql.strip()]


_DML_AFTER_WITH = {"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"}
_SKIP_WORDS = {"INTO", "IGNORE", "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "QUICK", "ONLY", "FROM",
               "TABLE", "TEMP", "TEMPORARY", "UNLOGGED", "IF", "NOT", "EXISTS", "OR", "REPLACE", "GLOBAL",
               "LOCAL"}  # fmt: skip
_DDL_TABLE = {"CREATE", "DROP", "ALTER", "TRUNCATE"}


Shape = tuple[Optional[str], Optional[str], Optional[str]]  # operation, collection, stored procedure


def operation_and_collection(sql: str, dialect: str = "postgresql") -> tuple[Optional[str], Optional[str]]:
    """``(db.operation.name, db.collection.name)`` read from the statement text."""
    op, coll, _ = statement_shape(sql, dialect)
    return op, coll


def statement_shape(sql: str, dialect: str = "postgresql") -> Shape:
    """``(db.operation.name, db.collection.name, db.stored_procedure.name)`` read from the text.

    ``CALL name(...)`` (PostgreSQL 11+, MySQL/MariaDB) runs a stored procedure: its name, as
    written (schema prefix and quotes kept, as for a collection), is the span's target."""
    toks = [(k, t) for k, t in tokenize(sql[:4096], dialect) if k not in (WS, COMMENT)]
    i = 0
    while i < len(toks) and toks[i] == (PUNCT, "("):
        i += 1
    if i >= len(toks) or toks[i][0] != IDENT:
        return None, None, None
    upper = toks[i][1].upper()
    ctes: set[str] = set()
    if upper == "WITH":
        j = _after_with(toks, i + 1)
        if j is None:
            return upper, None, None
        ctes = _with_names(toks[i + 1 : j])
        i, upper = j, toks[j][1].upper()
    rest = toks[i + 1 :]
    if upper == "SELECT":
        found = _after_from(rest)
        # a WITH query read by name is the statement's own result, no table: which of the tables
        # it reads is the collection is not certain
        return upper, None if found is not None and _folded(found) in ctes else found, None
    if upper in ("INSERT", "REPLACE", "UPDATE", "DELETE", "MERGE", "COPY", "TRUNCATE"):
        return upper, _name_after_modifiers(rest), None
    if upper == "CALL":
        return upper, None, _dotted_name(rest, 0)
    if upper in _DDL_TABLE:
        words = [t.upper() for k, t in rest[:6] if k == IDENT]
        if "TABLE" in words:
            return upper, _name_after_modifiers(rest), None
    return upper, None, None


def _after_with(toks: list[Token], i: int) -> Optional[int]:
    """Index of the statement keyword that follows a WITH list (at parenthesis depth 0)."""
    depth = 0
    for j in range(i, len(toks)):
        kind, text = toks[j]
        if kind == PUNCT and text == "(":
            depth += 1
        elif kind == PUNCT and text == ")":
            depth -= 1
        elif depth == 0 and kind == IDENT and text.upper() in _DML_AFTER_WITH:
            return j
    return None


def _with_names(toks: list[Token]) -> set[str]:
    """The names a WITH list defines (``toks``: from after WITH to the statement keyword), folded
    (``_folded``): each comes first, after RECURSIVE, or after a comma at parenthesis depth 0."""
    names: set[str] = set()
    depth = 0
    expect = True
    for kind, text in toks:
        if kind == PUNCT and text == "(":
            depth += 1
        elif kind == PUNCT and text == ")":
            depth -= 1
        elif depth == 0 and kind == PUNCT and text == ",":
            expect = True
        elif depth == 0 and expect and kind in (IDENT, QIDENT) and text.upper() != "RECURSIVE":
            names.add(_folded(text))
            expect = False
    return names


def _folded(name: str) -> str:
    """A name as the server compares it: unquoted ones in lower case, quoted ones as written."""
    return name if name[:1] in ('"', "`") else name.lower()


def _after_from(rest: list[Token]) -> Optional[str]:
    depth = 0
    for j, (kind, text) in enumerate(rest):
        if kind == PUNCT and text == "(":
            depth += 1
        elif kind == PUNCT and text == ")":
            depth -= 1
        elif depth == 0 and kind == IDENT and text.upper() == "FROM":
            return _dotted_name(rest, j + 1)
    return None


def _name_after_modifiers(rest: list[Token]) -> Optional[str]:
    j = 0
    while j < len(rest) and rest[j][0] == IDENT and rest[j][1].upper() in _SKIP_WORDS:
        j += 1
    return _dotted_name(rest, j)


def _dotted_name(toks: list[Token], j: int) -> Optional[str]:
    """``schema.table`` (quoted parts allowed) starting at ``toks[j]``, as written."""
    parts: list[str] = []
    while j < len(toks) and toks[j][0] in (IDENT, QIDENT):
        parts.append(toks[j][1])
        if j + 1 < len(toks) and toks[j + 1] == (PUNCT, "."):
            j += 2
            continue
        break
    return ".".join(parts) if parts else None


def span_name(system: str, operation: Optional[str], target: Optional[str]) -> str:
    """The conventions' database span name: ``{operation} {target}``, ``{operation}`` or system;
    the target is the collection, or the stored procedure a CALL runs."""
    if operation and target:
        return f"{operation} {target}"
    return operation or system


_USE_RE = re.compile(r"\s*use\s+`?([^`;\s]+)`?\s*;?\s*$", re.IGNORECASE)


def use_database(sql: str) -> Optional[str]:
    """The database named by a MySQL ``USE db`` statement, else ``None``."""
    m = _USE_RE.match(sql)
    return m.group(1) if m else None


class Described(NamedTuple):
    """What the span says of a statement: ``statement_shape`` and ``db.query.text``."""

    operation: Optional[str]
    collection: Optional[str]
    procedure: Optional[str]  # db.stored_procedure.name
    text: str


class RawSql:
    """Whether the SQL parsers keep the literals ([capture] raw_sql): ``db.query.text`` as sent and
    the values a server's error message quotes.

    One switch shared by every SQL parser of a tracker and flipped when the settings change
    (hostagent.assembly), so that a change reaches the next call of every open connection, not
    only of those opened after it: a pooled connection lives for days, and turning raw SQL off
    must stop personal data at once. ``generation`` counts the flips: what a parser memoised under
    the old value is stale, and one int compared per call says so (``StatementCache``).
    """

    __slots__ = ("generation", "on")

    def __init__(self, on: bool = False) -> None:
        self.on = on
        self.generation = 0

    def set(self, on: bool) -> None:
        """Flip it; called on the settings' thread. ``on`` is written first: a parser that sees
        the new generation sees the new value too."""
        if on != self.on:
            self.on = on
            self.generation += 1


def raw_sql_switch(raw_sql: Union[bool, RawSql]) -> RawSql:
    """The shared switch given, or a parser's own fixed one for a plain flag."""
    return raw_sql if isinstance(raw_sql, RawSql) else RawSql(raw_sql)


class StatementCache:
    """``describe(sql)`` -> ``Described``, memoised per connection.

    Prepared statements repeat the same text; ad-hoc queries repeat the same shape with other
    literals, so the shape is memoised by the sanitised text too. Bounded LRU. The described
    texts follow ``raw``: memoised under one value, they are forgotten when it flips.
    """

    def __init__(self, dialect: str, raw: Union[bool, RawSql], size: int = 256, max_text: int = 8192) -> None:
        self.dialect = dialect
        self.raw = raw_sql_switch(raw)
        self.size = size
        self.max_text = max_text
        self._generation = self.raw.generation
        self._by_text: OrderedDict[str, Described] = OrderedDict()
        self._by_shape: OrderedDict[str, Shape] = OrderedDict()

    def describe(self, sql: str) -> Described:
        generation = self.raw.generation
        if generation != self._generation:  # raw_sql flipped: the texts held were made under the other value
            self._generation = generation
            self._by_text.clear()
        hit = self._by_text.get(sql)
        if hit is not None:
            self._by_text.move_to_end(sql)
            return hit
        clean = sanitize(sql, self.dialect)
        shape = self._by_shape.get(clean)
        if shape is None:
            shape = statement_shape(clean, self.dialect)
            if len(clean) <= 2048:
                _put(self._by_shape, clean, shape, self.size)
        hit = Described(shape[0], shape[1], shape[2], (sql if self.raw.on else clean)[: self.max_text])
        if len(sql) <= 2048:  # long one-off texts are not worth their memory
            _put(self._by_text, sql, hit, self.size)
        return hit


def _put(cache: OrderedDict[str, Any], key: str, value: Any, size: int) -> None:
    cache[key] = value
    if len(cache) > size:
        cache.popitem(last=False)


# A server's error message quotes the values it refused (PostgreSQL: ``invalid input syntax for
# type integer: "4111 1111..."``; MySQL: ``Duplicate entry 'alice@x' for key ...`` and ``near
# '<the statement>'``), which without raw_sql must not reach the span any more than the literals of
# db.query.text do. Single-quoted text is a value or SQL in both; a double-quoted text after ": "
# is PostgreSQL's value (its identifiers, ``relation "users"``, are kept).
_MYSQL_ECHO = re.compile(r"near '.*' at line (\d+)", re.DOTALL)  # the statement from the error on
_QUOTED_VALUE = re.compile(r"(?<!\w)'(?:[^']|'')*'(?!\w)|(?<!\w)'(?:[^']|'')*$")  # not "doesn't"
_PG_VALUE = re.compile(r': "(?:[^"]|"")*"?')


def scrub_error_message(message: str, raw_sql: bool) -> str:
    """``message`` with the values it quotes replaced by ``?`` unless ``raw_sql``."""
    if raw_sql or ("'" not in message and '"' not in message):
        return message
    message = _MYSQL_ECHO.sub(r"near '?' at line \1", message)
    return _PG_VALUE.sub(': "?"', _QUOTED_VALUE.sub("'?'", message))
