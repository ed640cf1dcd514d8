"""hostagent.protocols.sql: sanitising, splitting and naming SQL, both dialects."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hostagent.protocols.sql import (
    operation_and_collection,
    sanitize,
    sanitize_by_tokens,
    scrub_error_message,
    span_name,
    split_statements,
    statement_shape,
    tokenize,
    use_database,
)


@pytest.mark.parametrize(
    ("dialect", "sql", "expected"),
    [
        ("postgresql", "SELECT id, name FROM users WHERE id = 1", "SELECT id, name FROM users WHERE id = ?"),
        ("postgresql", "SELECT * FROM t1 WHERE a IN (1, 2, 3)", "SELECT * FROM t1 WHERE a IN (?, ?, ?)"),
        ("postgresql", "x = 'it''s' AND y = E'a\\'b' AND z = -2.5e-3", "x = ? AND y = ? AND z = -?"),
        ("postgresql", "SELECT $tag$a;'b$tag$, $$x$$, X'1F', B'0101'", "SELECT ?, ?, ?, ?"),
        ("postgresql", 'SELECT "col1" FROM "t2" WHERE v = $1', 'SELECT "col1" FROM "t2" WHERE v = $1'),
        ("postgresql", "SELECT 0xFF, 1_000", "SELECT ?, ?"),
        ("postgresql", "SELECT 'cut short by the capture", "SELECT ?"),
        ("postgresql", "SELECT 1 -- note 'x'\n/* 2 */", "SELECT ? -- note 'x'\n/* 2 */"),
        ("mysql", "INSERT INTO people (id, name) VALUES (20, 'o\\'hara')",
         "INSERT INTO people (id, name) VALUES (?, ?)"),
        ("mysql", 'SELECT "double quoted is a string", `col` FROM t', "SELECT ?, `col` FROM t"),
        ("mysql", "SELECT * FROM t WHERE a = ? AND b = 0x1f AND c = _utf8mb4'x'",
         "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?"),
        ("mysql", "SELECT 1 # comment 'kept'", "SELECT ? # comment 'kept'"),
    ],
)  # fmt: skip
def test_sanitize(dialect: str, sql: str, expected: str) -> None:
    assert sanitize(sql, dialect) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1; SELECT 'two'; UPDATE users SET name = 'x' WHERE id = 42",
         ["SELECT 1", "SELECT 'two'", "UPDATE users SET name = 'x' WHERE id = 42"]),
        ("SELECT ';' ; SELECT $$;$$;", ["SELECT ';'", "SELECT $$;$$"]),
        ("SELECT 1;;  ; -- trailing comment", ["SELECT 1"]),
        ("", [""]),  # one empty statement: PostgreSQL answers EmptyQueryResponse
        ("-- only a comment", ["-- only a comment"]),
    ],
)  # fmt: skip
def test_split_statements(sql: str, expected: list[str]) -> None:
    assert split_statements(sql) == expected


@pytest.mark.parametrize(
    ("sql", "op", "collection"),
    [
        ("SELECT id FROM users WHERE id = $1", "SELECT", "users"),
        ("select * from public.users u join orders o on o.uid = u.id", "SELECT", "public.users"),  # keyword's case
        ("SELECT count(*) FROM (SELECT 1 FROM t) s", "SELECT", None),  # a subquery is no collection
        ("SELECT (SELECT max(a) FROM inner_t) FROM outer_t", "SELECT", "outer_t"),
        ("SELECT 1", "SELECT", None),
        ("INSERT INTO users (id) VALUES (1)", "INSERT", "users"),
        ("INSERT IGNORE INTO `people` VALUES (1)", "INSERT", "`people`"),
        ("UPDATE ONLY users SET a = 1", "UPDATE", "users"),
        ("DELETE FROM \"Users\" WHERE id = 1", "DELETE", '"Users"'),
        ("WITH x AS (SELECT 1 FROM a) INSERT INTO b SELECT * FROM x", "INSERT", "b"),
        ("with x as (select 1 from a) insert into b select * from x", "INSERT", "b"),
        # a WITH query's name is no collection (psql and pymysql sent these; was "q", "X")
        ("WITH q AS (SELECT id FROM acc_items) SELECT count(*) FROM q", "SELECT", None),
        ("WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) SELECT n FROM t",
         "SELECT", None),
        ("with a as (select 1), X as (select 2) select * from x", "SELECT", None),  # unquoted: any case
        ('WITH "Q" AS (SELECT 1) SELECT * FROM "Q"', "SELECT", None),
        ('WITH "Q" AS (SELECT 1) SELECT * FROM q', "SELECT", "q"),  # "Q" and q are two names
        ("WITH q AS MATERIALIZED (SELECT 1) SELECT * FROM orders, q", "SELECT", "orders"),
        ("WITH q AS (SELECT 1) SELECT * FROM other.q", "SELECT", "other.q"),  # a schema's table
        ("WITH q AS (SELECT id FROM a) UPDATE b SET x = 1 FROM q WHERE b.id = q.id", "UPDATE", "b"),
        ("Delete From Users", "DELETE", "Users"),  # the collection stays as written
        ("CREATE TABLE IF NOT EXISTS users (id int)", "CREATE", "users"),
        ("DROP TABLE users", "DROP", "users"),
        ("CREATE INDEX i ON users (id)", "CREATE", None),
        ("TRUNCATE TABLE logs", "TRUNCATE", "logs"),
        ("COPY users FROM STDIN", "COPY", "users"),
        ("BEGIN", "BEGIN", None),
        ("  (SELECT 1 FROM t)", "SELECT", "t"),
        ("", None, None),
        ("'just a string'", None, None),
    ],
)  # fmt: skip
def test_operation_and_collection(sql: str, op: str, collection: str) -> None:
    dialect = "mysql" if "`" in sql else "postgresql"
    assert operation_and_collection(sql, dialect) == (op, collection)


@pytest.mark.parametrize(
    ("sql", "dialect", "shape"),
    [
        ("CALL add_one($1)", "postgresql", ("CALL", None, "add_one")),
        ("call Public.Touch()", "postgresql", ("CALL", None, "Public.Touch")),  # as written
        ('CALL "My Proc"(1)', "postgresql", ("CALL", None, '"My Proc"')),
        ("CALL get_people(?)", "mysql", ("CALL", None, "get_people")),
        ("CALL `get_people`(@`_get_people_0`)", "mysql", ("CALL", None, "`get_people`")),
        ("CALL shop.restock", "mysql", ("CALL", None, "shop.restock")),  # MySQL: no parentheses needed
        ("CALL", "mysql", ("CALL", None, None)),
        ("SELECT * FROM users", "postgresql", ("SELECT", "users", None)),
        ("SELECT call FROM t", "postgresql", ("SELECT", "t", None)),
    ],
)  # fmt: skip
def test_statement_shape_names_the_stored_procedure(sql: str, dialect: str, shape: tuple) -> None:
    assert statement_shape(sql, dialect) == shape


def test_span_name() -> None:
    assert span_name("postgresql", "SELECT", "users") == "SELECT users"
    assert span_name("postgresql", "BEGIN", None) == "BEGIN"
    assert span_name("mysql", None, None) == "mysql"


def test_use_database() -> None:
    assert use_database("USE shop") == "shop"
    assert use_database("use `my-db`;") == "my-db"
    assert use_database("SELECT 1") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["postgresql", "mysql"]))
def test_tokens_cover_the_text_and_nothing_raises(sql: str, dialect: str) -> None:
    assert "".join(text for _, text in tokenize(sql, dialect)) == sql
    sanitize(sql, dialect)
    split_statements(sql, dialect)
    operation_and_collection(sql, dialect)


SQLISH = st.lists(st.sampled_from(["SELECT", " ", "t1", "x", "1", "2.5", "e3", "'", "''", '"', "`", "$", "$$",
                                   "$a$", "E", "X", "N", "B", "_utf8", "\\", "--", "#", "/*", "*/", "\n", ";",
                                   "(", ")", ",", "0x1F", "$1", "?", "=", "é"]), max_size=40)  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(SQLISH, st.sampled_from(["postgresql", "mysql"]))
def test_fast_sanitize_agrees_with_the_tokenizer(parts: list[str], dialect: str) -> None:
    """Words apart (real SQL); a number glued to an identifier ("SELECT2.5") is garbage either way."""
    sql = " ".join(parts)
    assume(dialect != "mysql" or "$" not in sql)  # "$1" is not MySQL; "a$1" is an identifier
    assert sanitize(sql, dialect) == sanitize_by_tokens(sql, dialect)


@pytest.mark.parametrize("message, scrubbed", [
    # PostgreSQL (psql against 15): the refused value after ": ", identifiers kept
    ('invalid input syntax for type integer: "topsecret-lit"', 'invalid input syntax for type integer: "?"'),
    ('relation "missing_table" does not exist', 'relation "missing_table" does not exist'),
    ('duplicate key value violates unique constraint "t_pkey"',
     'duplicate key value violates unique constraint "t_pkey"'),
    ('invalid input value for enum mood: "it""s"', 'invalid input value for enum mood: "?"'),
    # MariaDB 10.11: the statement echoed back from the error on (literals inside), duplicate values
    ("You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version "
     "for the right syntax to use near 'SELEC 'mysecret-literal-99' FROM t1' at line 1",
     "You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version "
     "for the right syntax to use near '?' at line 1"),
    ("Duplicate entry '50' for key 'PRIMARY'", "Duplicate entry '?' for key '?'"),
    ("Table 'db.missing' doesn't exist", "Table '?' doesn't exist"),
    ("no quotes at all", "no quotes at all"),
    ("cut in the middle: 'secr", "cut in the middle: '?'"),
])
def test_error_messages_lose_the_values_they_quote(message: str, scrubbed: str) -> None:
    assert scrub_error_message(message, raw_sql=False) == scrubbed
    assert scrub_error_message(message, raw_sql=True) == message
