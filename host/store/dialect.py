# Runs on CPython (host): the SQLite -> PostgreSQL translation of the store's SQL statements.
"""SQL dialect translation, once per statement string (cached).

The store's queries are written for SQLite; ``translate()`` turns one into PostgreSQL:

- ``?`` -> ``%s`` and ``%`` -> ``%%`` (psycopg's placeholders; literals are left alone
  except for the ``%`` doubling psycopg needs in them too);
- ``BEGIN IMMEDIATE`` -> ``BEGIN ISOLATION LEVEL SERIALIZABLE`` (see host/store/pg.py); a
  ``BEGIN ISOLATION LEVEL ...`` (the tap transaction's :data:`TAP_BEGIN`) is kept as it is;
- the engine's read of a tap's card and member locks both rows (``FOR UPDATE``, see
  :data:`ROW_LOCKS`);
- ``INSERT OR IGNORE`` -> ``INSERT ... ON CONFLICT DO NOTHING``; ``INSERT OR REPLACE`` ->
  ``ON CONFLICT (primary key) DO UPDATE`` of every other inserted column;
- scalar ``max(a, b)`` / ``min(a, b)`` -> ``GREATEST`` / ``LEAST``; ``ifnull`` ->
  ``coalesce``; ``instr(a, b)`` -> ``strpos(a, b)``; ``substr(x, -n)`` -> ``right(x, n)``;
- ``x'..'`` blob literals -> ``'\\x..'::bytea``;
- an ``INSERT`` into a table with an ``id`` identity column gets ``RETURNING id`` (the
  cursor's ``lastrowid``).

``translate_ddl()`` turns a migration script into PostgreSQL DDL: INTEGER -> BIGINT (fen and
ms timestamps overflow int4), ``id INTEGER PRIMARY KEY`` -> an identity column, BLOB ->
BYTEA, REAL -> DOUBLE PRECISION, ``GLOB`` checks -> ``~`` regular expressions, and the
append-only ``RAISE(ABORT)`` triggers -> plpgsql trigger functions.
"""

from __future__ import annotations

import functools
import re

#: Tables whose ``id`` is an identity column (an INSERT into them returns the new id).
ID_TABLES: set[str] = set()
#: Primary key columns per table (for ``INSERT OR REPLACE``), filled from the migrations.
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {}
#: Column names per table (an upsert's bare column references are qualified with its table).
COLUMNS: dict[str, set[str]] = {}

_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_INSERT = re.compile(r"^\s*INSERT\s+(?:OR\s+(IGNORE|REPLACE)\s+)?INTO\s+(\w+)", re.I)
_FUNCS = {"max", "min", "ifnull", "instr", "substr"}


def _tokens(sql: str) -> list[str]:
    """Split ``sql`` into literals ('..'), quoted names (".."), words, and single chars."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i:j + 1])
            i = j + 1
        elif c in "xX" and i + 1 < n and sql[i + 1] == "'" and (not out or not _WORD.fullmatch(
                out[-1][-1:] or " ")):
            j = sql.index("'", i + 2)
            out.append("'\\x" + sql[i + 2:j] + "'::bytea")
            i = j + 1
        elif c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            i = j
        else:
            m = _WORD.match(sql, i)
            if m:
                out.append(m.group())
                i = m.end()
            else:
                out.append(c)
                i += 1
    return out


def _call_args(toks: list[str], start: int) -> tuple[list[list[str]], int]:
    """The arguments of the call whose ``(`` is at ``toks[start]``, and the index after ``)``."""
    args: list[list[str]] = [[]]
    depth = 0
    i = start + 1
    while i < len(toks):
        t = toks[i]
        if t == "(":
            depth += 1
        elif t == ")":
            if depth == 0:
                return args, i + 1
            depth -= 1
        elif t == "," and depth == 0:
            args.append([])
            i += 1
            continue
        args[-1].append(t)
        i += 1
    raise ValueError("unbalanced parentheses")


def _next_word(toks: list[str], i: int) -> int:
    """Index of the first non-blank token at or after ``i``."""
    while i < len(toks) and toks[i].isspace():
        i += 1
    return i


def _rewrite(toks: list[str]) -> list[str]:
    """Placeholders, functions and literals of a token list, recursively inside calls."""
    out: list[str] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        low = t.lower()
        j = _next_word(toks, i + 1)
        if low in _FUNCS and j < len(toks) and toks[j] == "(":
            args, end = _call_args(toks, j)
            args = [_rewrite(a) for a in args]
            out.extend(_function(low, t, args))
            i = end
            continue
        if t == "?" and i + 1 < len(toks) and toks[i + 1].isdigit():
            out.append(f"%(p{toks[i + 1]})s")   # ?N: the N-th parameter (see PgConnection)
            i += 2
            continue
        if t == "?":
            out.append("%s")
        elif t == "[" and i + 2 < len(toks) and toks[i + 2] == "]":
            out.append(f'"{toks[i + 1]}"')         # [name]: SQLite's other identifier quotes
            i += 3
            continue
        elif t.lower() == "rowid":
            out.append("ctid")                      # insertion order, near enough (export)
        elif t.startswith("'"):
            out.append(t.replace("%", "%%"))
        elif t == "%":
            out.append("%%")
        else:
            out.append(t)
        i += 1
    return out


def _function(low: str, name: str, args: list[list[str]]) -> list[str]:
    joined = [",".join("".join(a) for a in args)]
    if low in ("max", "min") and len(args) > 1:
        return ["GREATEST(" if low == "max" else "LEAST(", *joined, ")"]
    if low == "ifnull":
        return ["coalesce(", *joined, ")"]
    if low == "instr":
        return ["strpos(", *joined, ")"]
    if low == "substr" and len(args) == 2:
        n = "".join(args[1]).strip()
        if re.fullmatch(r"-\d+", n):
            return ["right(", "".join(args[0]), ", ", n[1:], ")"]
    return [name, "(", *joined, ")"]


def _insert_tail(sql: str, kind: str | None, table: str) -> str:
    """ON CONFLICT for INSERT OR IGNORE/REPLACE, RETURNING id for identity tables."""
    tail = ""
    if kind and kind.upper() == "IGNORE":
        tail = " ON CONFLICT DO NOTHING"
    elif kind:
        pk = PRIMARY_KEYS[table]
        m = re.search(r"INTO\s+\w+\s*\(([^)]*)\)", sql, re.I)
        cols = [c.strip() for c in m.group(1).split(",")] if m else []
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in pk)
        tail = f" ON CONFLICT ({', '.join(pk)}) DO " + (f"UPDATE SET {sets}" if sets else "NOTHING")
    if table in ID_TABLES and not re.search(r"\bRETURNING\b", sql, re.I):
        tail += " RETURNING id"
    return tail


_NOT_ALIAS = {"WHERE", "GROUP", "ORDER", "LIMIT", "JOIN", "LEFT", "INNER", "CROSS", "UNION",
              "ON", "HAVING", "EXCEPT", "INTERSECT", "OFFSET", "WINDOW"}


def _alias_subqueries(toks: list[str]) -> list[str]:
    """``FROM (SELECT ...)`` without an alias gets one (PostgreSQL before 16 wants it)."""
    out = list(toks)
    i = 0
    while i < len(out):
        if out[i].upper() in ("FROM", "JOIN"):
            j = _next_word(out, i + 1)
            if j < len(out) and out[j] == "(":
                _args, end = _call_args(out, j)
                k = _next_word(out, end)
                if k >= len(out) or not _WORD.fullmatch(out[k]) or out[k].upper() in _NOT_ALIAS:
                    out.insert(end, " AS _q%d" % i)
        i += 1
    return out


def _select_aliases(toks: list[str], having: int) -> dict[str, list[str]]:
    """``expr AS name`` of the SELECT list that the HAVING at ``toks[having]`` belongs to."""
    depth, i = 0, having - 1
    while i >= 0 and not (depth == 0 and toks[i].upper() == "SELECT"):
        depth += toks[i] == ")"
        depth -= toks[i] == "("
        i -= 1
    aliases: dict[str, list[str]] = {}
    item: list[str] = []
    depth = 0
    for t in toks[i + 1:having]:
        if depth == 0 and (t == "," or t.upper() == "FROM"):
            words = [w for w in item if not w.isspace()]
            if len(words) > 2 and words[-2].upper() == "AS":
                cut = len(item) - 1 - item[::-1].index(words[-2])
                aliases[words[-1]] = item[:cut]
            item = []
            if t.upper() == "FROM":
                break
            continue
        depth += (t == "(") - (t == ")")
        item.append(t)
    return aliases


def _having_aliases(toks: list[str]) -> list[str]:
    """``HAVING fen > 0`` where ``fen`` names a SELECT expression: PostgreSQL wants the
    expression itself."""
    out = list(toks)
    for h in [i for i, t in enumerate(out) if t.upper() == "HAVING"][::-1]:
        aliases = _select_aliases(out, h)
        depth, j = 0, h + 1
        while j < len(out) and depth >= 0:
            t = out[j]
            depth += (t == "(") - (t == ")")
            if depth >= 0 and t in aliases and out[j - 1] != ".":
                out[j] = "(" + "".join(aliases[t]) + ")"
            j += 1
    return out


def _qualify_upsert(body: str, table: str) -> str:
    """``SET n = n + excluded.n``: PostgreSQL wants the old row's ``n`` as ``table.n``."""
    m = re.search(r"\bDO\s+UPDATE\s+SET\b", body, re.I)
    head, rest = body[:m.end()], body[m.end():]
    cols = COLUMNS.get(table, set())
    out, after_eq, prev = [], False, ""
    for t in _tokens(rest):
        if t == "=":
            after_eq = True
        elif t == ",":
            after_eq = False
        elif t.upper() in ("WHERE", "RETURNING"):
            after_eq = t.upper() == "WHERE"
        if after_eq and t in cols and prev != ".":
            t = f"{table}.{t}"
        out.append(t)
        if not t.isspace():
            prev = t
    return head + "".join(out)


#: Whole statements PostgreSQL runs differently. The engine numbers a tap before writing it
#: (its ledger rows carry the id): on SQLite the write lock makes ``max(id) + 1`` safe; on
#: PostgreSQL two daemons would read the same maximum, so the id comes from the sequence.
STATEMENTS = {
    "SELECT coalesce(max(id), 0) + 1 FROM taps":
        "SELECT nextval(pg_get_serial_sequence('taps', 'id'))",
}

#: The same, as a subquery inside a larger statement (the engine's replay check reads the
#: next tap id with it): on PostgreSQL the sequence, so two daemons never race for one id.
SUBQUERIES = {
    "(SELECT coalesce(max(id), 0) + 1 FROM taps)":
        "nextval(pg_get_serial_sequence('taps', 'id'))",
}


#: The BEGIN of a tap batch on PostgreSQL (``PgConnection.begin_taps``): READ COMMITTED, with
#: the rows a tap decides on locked (:data:`ROW_LOCKS`) instead of SERIALIZABLE's predicate
#: locks, which on a store's small tables made taps of different members fail each other.
TAP_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"

#: The statement that locks a tap's card and its member (host/store/db.py ``lock_card``,
#: sent with the engine's head read in one round trip): a second tap of that member
#: (another daemon's) waits for the COMMIT and then, its head read being a statement of its
#: own under READ COMMITTED, reads the balance the first one left. On SQLite it is not run
#: (``BEGIN IMMEDIATE`` already holds the store).
CARD_LOCK = "SELECT 1 FROM cards c JOIN members m ON m.id = c.member_id WHERE c.uid = ?"

#: Statements (by their ending) that lock the rows they read, and how: the card lock above,
#: and an operator write's read of its member (host/admin/core.py ``member``), locked the
#: same way; in its SERIALIZABLE transaction, a member a tap changed meanwhile fails it with
#: 40001 and it is run again. So a tap's READ COMMITTED never interleaves with another write
#: of the same member, even one that writes no money (a coupon used at the counter).
ROW_LOCKS = {
    "FROM cards c JOIN members m ON m.id = c.member_id WHERE c.uid = ?": " FOR UPDATE OF c, m",
    "referrer_id, referral_paid FROM members WHERE id = ?": " FOR UPDATE",
}


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> tuple[str, bool]:
    """(PostgreSQL text of ``sql``, whether ``RETURNING id`` was added)."""
    s = sql.strip().rstrip(";")
    if s in STATEMENTS:
        return STATEMENTS[s], False
    for sub, pg in SUBQUERIES.items():
        s = s.replace(sub, pg)
    head = s[:20].upper()
    if head.startswith("BEGIN"):
        if s.upper().startswith("BEGIN ISOLATION LEVEL "):
            return s, False
        return "BEGIN ISOLATION LEVEL SERIALIZABLE", False
    lock = next((v for k, v in ROW_LOCKS.items() if s.endswith(k)), "")
    m = _INSERT.match(s)
    tail, returning = "", False
    if m:
        tail = _insert_tail(s, m.group(1), m.group(2).lower())
        returning = tail.endswith("RETURNING id")
        if m.group(1):
            s = re.sub(r"^\s*INSERT\s+OR\s+\w+\s+INTO", "INSERT INTO", s, flags=re.I)
    body = "".join(_having_aliases(_alias_subqueries(_rewrite(_tokens(s)))))
    if m and re.search(r"\bDO\s+UPDATE\s+SET\b", body, re.I):
        body = _qualify_upsert(body, m.group(2).lower())
    ret = re.search(r"\sRETURNING\s", body, re.I)
    if ret and tail and not returning:
        body = body[:ret.start()] + tail + body[ret.start():]
    else:
        body += tail
    return body + lock, returning


# ---------------------------------------------------------------------------------- DDL
_TRIGGER = re.compile(
    r"CREATE TRIGGER (\w+) BEFORE (UPDATE|DELETE) ON (\w+)\s+BEGIN SELECT RAISE\(ABORT,\s*"
    r"'([^']*)'\);\s*END;", re.I)


def _glob_to_regex(m: re.Match[str]) -> str:
    neg, pat = m.group(1), m.group(2)
    rx = ""
    for c in re.findall(r"\[[^\]]*\]|.", pat):
        rx += c if c.startswith("[") and len(c) > 1 else (".*" if c == "*" else
                                                          "." if c == "?" else re.escape(c))
    return f"{'!~' if neg else '~'} '^{rx}$'"


def _trigger(m: re.Match[str]) -> str:
    name, op, table, msg = m.groups()
    return (f"CREATE OR REPLACE FUNCTION {name}_fn() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{msg}' USING ERRCODE = 'integrity_constraint_violation'; "
            f"END $$;\nCREATE TRIGGER {name} BEFORE {op} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}_fn();")


def translate_ddl(sql: str) -> str:
    """PostgreSQL DDL for one SQLite migration script (see the module doc)."""
    s = _TRIGGER.sub(_trigger, sql)
    s = re.sub(r"\bid INTEGER PRIMARY KEY\b", "id BIGINT GENERATED BY DEFAULT AS IDENTITY "
               "PRIMARY KEY", s)
    s = re.sub(r"\bINTEGER\b", "BIGINT", s)
    s = re.sub(r"\bBLOB\b", "BYTEA", s)
    s = re.sub(r"\bREAL\b", "DOUBLE PRECISION", s)
    s = re.sub(r"(NOT\s+)?GLOB\s+'([^']*)'", _glob_to_regex, s)
    s = re.sub(r"\bx''", "'\\\\x'::bytea", s)
    return s


def learn_schema(sql: str) -> None:
    """Record identity tables and primary keys declared by one SQLite migration script."""
    for m in re.finditer(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+) \((.*?)\n\);", sql, re.S):
        table, body = m.group(1).lower(), m.group(2)
        if re.search(r"^\s*id INTEGER PRIMARY KEY\b", body, re.M):
            ID_TABLES.add(table)
        col = re.search(r"^\s*(\w+) \w+ PRIMARY KEY\b", body, re.M)
        multi = re.search(r"PRIMARY KEY \(([^)]*)\)", body)
        COLUMNS.setdefault(table, set()).update(re.findall(r"^\s*(\w+) [A-Z]+", body, re.M))
        if col:
            PRIMARY_KEYS[table] = (col.group(1),)
        elif multi:
            PRIMARY_KEYS[table] = tuple(c.strip() for c in multi.group(1).split(","))
    for table, col in re.findall(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", sql):
        COLUMNS.setdefault(table.lower(), set()).add(col)
