"""A tokenizer and recursive-descent parser for the subset of CQL 3 the test server executes.

Follows the shapes of Cassandra's CQL grammar (Parser.g / the CQL reference, "Data Definition" and
"Data Manipulation"): case-insensitive keywords, unquoted identifiers folded to lower case, "quoted"
identifiers kept verbatim, '' escapes in string literals, $$ strings, `?` and `:name` bind markers,
`--`, `//` and `/* */` comments, an optional trailing `;`, and clause order as in the grammar
(e.g. INSERT ... VALUES (...) IF NOT EXISTS USING TTL ...; UPDATE t USING ... SET ... WHERE ... IF ...).

The parser only builds an AST; names are resolved and types checked in engine.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union

from .errors import InvalidRequest, SyntaxException

# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-])")
_HEX_RE = re.compile(r"0[xX][0-9a-fA-F]*(?!\w)")
_NUM_RE = re.compile(r"-?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?(?![\w.])")
_IDENT_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")
_SYMBOLS = ("!=", "<=", ">=", "(", ")", ",", ";", ".", "*", "=", "<", ">", "?", ":", "{", "}", "[", "]", "+", "-")


@dataclass
class Token:
    kind: str  # ident, qident, string, integer, float, uuid, hex, named, qmark, sym, eof
    value: str
    pos: int

    def is_kw(self, *words: str) -> bool:
        return self.kind == "ident" and self.value in words


def tokenize(text: str) -> List[Token]:
    tokens: List[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if text.startswith("--", i) or text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise SyntaxException("line 1:%d unterminated comment" % i)
            i = j + 2
            continue
        if ch == "'":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise SyntaxException("line 1:%d unterminated string literal" % i)
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            tokens.append(Token("string", "".join(buf), i))
            i = j + 1
            continue
        if text.startswith("$$", i):
            j = text.find("$$", i + 2)
            if j < 0:
                raise SyntaxException("line 1:%d unterminated $$ string" % i)
            tokens.append(Token("string", text[i + 2:j], i))
            i = j + 2
            continue
        if ch == '"':
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise SyntaxException("line 1:%d unterminated quoted identifier" % i)
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            if not buf:
                raise SyntaxException("line 1:%d empty quoted identifier" % i)
            tokens.append(Token("qident", "".join(buf), i))
            i = j + 1
            continue
        m = _UUID_RE.match(text, i)
        if m:
            tokens.append(Token("uuid", m.group(0), i))
            i = m.end()
            continue
        m = _HEX_RE.match(text, i)
        if m:
            tokens.append(Token("hex", m.group(0)[2:], i))
            i = m.end()
            continue
        if ch.isdigit() or (ch == "-" and i + 1 < n and text[i + 1].isdigit()):
            m = _NUM_RE.match(text, i)
            if not m:
                raise SyntaxException("line 1:%d invalid number near %r" % (i, text[i:i + 20]))
            kind = "float" if (m.group(1) or m.group(2)) else "integer"
            tokens.append(Token(kind, m.group(0), i))
            i = m.end()
            continue
        m = _IDENT_RE.match(text, i)
        if m:
            tokens.append(Token("ident", m.group(0).lower(), i))
            i = m.end()
            continue
        if ch == ":" and i + 1 < n and (text[i + 1].isalpha() or text[i + 1] == '"'):
            if text[i + 1] == '"':
                j = text.find('"', i + 2)
                if j < 0:
                    raise SyntaxException("line 1:%d unterminated quoted marker name" % i)
                tokens.append(Token("named", text[i + 2:j], i))
                i = j + 1
            else:
                m = _IDENT_RE.match(text, i + 1)
                tokens.append(Token("named", m.group(0).lower(), i))
                i = m.end()
            continue
        for sym in _SYMBOLS:
            if text.startswith(sym, i):
                tokens.append(Token("qmark" if sym == "?" else "sym", sym, i))
                i += len(sym)
                break
        else:
            raise SyntaxException("line 1:%d no viable alternative at character '%s'" % (i, ch))
    tokens.append(Token("eof", "", n))
    return tokens


# ---------------------------------------------------------------------------------------------
# AST
# ---------------------------------------------------------------------------------------------
@dataclass
class Literal:
    kind: str  # string, integer, float, boolean, null, uuid, hex, nan, infinity
    value: object
    text: str


@dataclass
class CollectionLiteral:
    kind: str  # map, set, list, empty (``{}``: a map or a set)
    items: list


@dataclass
class Marker:
    index: int
    name: Optional[str] = None


@dataclass
class FunctionCall:
    name: str
    args: list


Term = Union[Literal, CollectionLiteral, Marker, FunctionCall]


@dataclass
class Relation:
    column: str
    op: str  # = < > <= >= != IN
    term: object  # a Term, or a list of Terms for IN (...)


@dataclass
class Selector:
    kind: str  # column, ttl, writetime, count
    column: Optional[str]
    alias: Optional[str] = None


@dataclass
class UsingClause:
    ttl: Optional[object] = None
    timestamp: Optional[object] = None


@dataclass
class CreateKeyspace:
    name: str
    if_not_exists: bool
    options: dict


@dataclass
class DropKeyspace:
    name: str
    if_exists: bool


@dataclass
class AlterKeyspace:
    name: str
    options: dict


@dataclass
class AlterTable:
    keyspace: Optional[str]
    name: str
    action: str  # add, drop, with
    columns: List[ColumnDef] = field(default_factory=list)  # ADD: definitions; DROP: names in .name
    options: dict = field(default_factory=dict)
    if_exists: bool = False
    if_column_exists: bool = False  # ADD IF NOT EXISTS / DROP IF EXISTS


@dataclass
class Use:
    keyspace: str


@dataclass
class ColumnDef:
    name: str
    type_text: str
    static: bool = False


@dataclass
class CreateTable:
    keyspace: Optional[str]
    name: str
    if_not_exists: bool
    columns: List[ColumnDef]
    partition_key: List[str]
    clustering: List[str]
    options: dict
    clustering_order: List[Tuple[str, str]]
    compact_storage: bool = False


@dataclass
class DropTable:
    keyspace: Optional[str]
    name: str
    if_exists: bool


@dataclass
class Truncate:
    keyspace: Optional[str]
    name: str


@dataclass
class Insert:
    keyspace: Optional[str]
    table: str
    columns: List[str]
    values: list
    if_not_exists: bool
    using: UsingClause


@dataclass
class Update:
    keyspace: Optional[str]
    table: str
    using: UsingClause
    assignments: List[Tuple[str, object]]
    where: List[Relation]
    if_exists: bool
    conditions: List[Relation]


@dataclass
class Delete:
    keyspace: Optional[str]
    table: str
    columns: List[str]
    using: UsingClause
    where: List[Relation]
    if_exists: bool
    conditions: List[Relation]


@dataclass
class Select:
    keyspace: Optional[str]
    table: str
    selectors: Optional[List[Selector]]  # None means *
    where: List[Relation]
    order_by: List[Tuple[str, str]]
    limit: Optional[object]
    allow_filtering: bool
    distinct: bool = False


@dataclass
class Batch:
    kind: str  # logged, unlogged, counter
    using: UsingClause
    statements: list


@dataclass
class Parsed:
    """A parsed statement plus its bind markers in textual order."""

    statement: object
    markers: List[Marker] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------
# Reserved keywords (CQL reference, Appendix A): usable as identifiers only when double-quoted.
RESERVED = {
    "add", "allow", "alter", "and", "apply", "asc", "authorize", "batch", "begin", "by", "columnfamily", "create",
    "default", "delete", "desc", "describe", "drop", "entries", "execute", "from", "full", "grant", "if", "in",
    "index", "infinity", "insert", "into", "keyspace", "limit", "modify", "nan", "norecursive", "not", "null", "of",
    "on", "or", "order", "primary", "rename", "replace", "revoke", "schema", "select", "set", "table", "to", "token",
    "truncate", "unlogged", "unset", "update", "use", "using", "view", "where", "with",
}

TABLE_OPTIONS = {
    "comment", "default_time_to_live", "gc_grace_seconds", "bloom_filter_fp_chance", "caching",
    "compaction", "compression", "crc_check_chance", "memtable_flush_period_in_ms",
    "max_index_interval", "min_index_interval", "speculative_retry", "additional_write_policy",
    "read_repair", "cdc", "extensions", "dclocal_read_repair_chance", "read_repair_chance", "id",
    "memtable",
}


class Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.markers: List[Marker] = []

    # -- helpers ---------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def peek(self, k: int = 1) -> Token:
        return self.tokens[min(self.pos + k, len(self.tokens) - 1)]

    def advance(self) -> Token:
        t = self.tokens[self.pos]
        if t.kind != "eof":
            self.pos += 1
        return t

    def error(self, expected: str):
        t = self.tok
        near = "<EOF>" if t.kind == "eof" else repr(self.text[t.pos:t.pos + 30])
        raise SyntaxException("line 1:%d %s expected near %s" % (t.pos, expected, near))

    def accept_kw(self, *words: str) -> bool:
        if self.tok.is_kw(*words):
            self.advance()
            return True
        return False

    def expect_kw(self, *words: str) -> str:
        if not self.tok.is_kw(*words):
            self.error("/".join(w.upper() for w in words))
        return self.advance().value

    def accept_sym(self, sym: str) -> bool:
        if self.tok.kind in ("sym", "qmark") and self.tok.value == sym:
            self.advance()
            return True
        return False

    def expect_sym(self, sym: str):
        if not self.accept_sym(sym):
            self.error("'%s'" % sym)

    def ident(self, what: str = "identifier") -> str:
        t = self.tok
        if t.kind == "qident" or (t.kind == "ident" and t.value not in RESERVED):
            self.advance()
            return t.value
        self.error(what)

    def qualified_name(self) -> Tuple[Optional[str], str]:
        first = self.ident("keyspace or table name")
        if self.accept_sym("."):
            return first, self.ident("table name")
        return None, first

    # -- entry -------------------------------------------------------------------------------
    def parse(self) -> Parsed:
        stmt = self.statement()
        self.accept_sym(";")
        if self.tok.kind != "eof":
            self.error("end of statement")
        return Parsed(stmt, self.markers)

    def statement(self):
        t = self.tok
        if t.is_kw("select"):
            return self.select()
        if t.is_kw("insert"):
            return self.insert()
        if t.is_kw("update"):
            return self.update()
        if t.is_kw("delete"):
            return self.delete()
        if t.is_kw("begin"):
            return self.batch()
        if t.is_kw("use"):
            self.advance()
            return Use(self.ident("keyspace name"))
        if t.is_kw("create"):
            return self.create()
        if t.is_kw("drop"):
            return self.drop()
        if t.is_kw("truncate"):
            self.advance()
            self.accept_kw("table", "columnfamily")
            ks, name = self.qualified_name()
            return Truncate(ks, name)
        if t.is_kw("alter"):
            self.advance()
            if self.accept_kw("keyspace"):
                name = self.ident("keyspace name")
                self.expect_kw("with")
                return AlterKeyspace(name, self.properties())
            if self.accept_kw("table", "columnfamily"):
                return self.alter_table()
            raise InvalidRequest("ALTER %s is not supported by the CQL test server" % self.tok.value.upper())
        if t.kind == "ident" and t.value in ("grant", "revoke", "list", "apply"):
            raise InvalidRequest("%s statements are not supported by the CQL test server" % t.value.upper())
        self.error("a statement")

    # -- terms -------------------------------------------------------------------------------
    def marker(self) -> Marker:
        t = self.advance()
        m = Marker(len(self.markers), t.value if t.kind == "named" else None)
        self.markers.append(m)
        return m

    def term(self):
        t = self.tok
        if t.kind in ("qmark", "named"):
            return self.marker()
        if t.kind == "string":
            self.advance()
            return Literal("string", t.value, t.value)
        if t.kind == "integer":
            self.advance()
            return Literal("integer", int(t.value), t.value)
        if t.kind == "float":
            self.advance()
            return Literal("float", float(t.value), t.value)
        if t.kind == "uuid":
            self.advance()
            return Literal("uuid", t.value, t.value)
        if t.kind == "hex":
            self.advance()
            if len(t.value) % 2:
                raise SyntaxException("line 1:%d odd number of hex digits in blob constant" % t.pos)
            return Literal("hex", bytes.fromhex(t.value), "0x" + t.value)
        if t.kind == "sym" and t.value == "-" and self.peek().is_kw("nan", "infinity"):
            self.advance()
            w = self.advance()
            return Literal("float", float("-" + w.value), "-" + w.value)
        if t.kind == "ident":
            if t.value in ("true", "false"):
                self.advance()
                return Literal("boolean", t.value == "true", t.value)
            if t.value == "null":
                self.advance()
                return Literal("null", None, "null")
            if t.value in ("nan", "infinity"):
                self.advance()
                return Literal("float", float(t.value), t.value)
            if self.peek().kind == "sym" and self.peek().value == "(":
                name = self.advance().value
                self.expect_sym("(")
                args = []
                if not self.accept_sym(")"):
                    args.append(self.term())
                    while self.accept_sym(","):
                        args.append(self.term())
                    self.expect_sym(")")
                return FunctionCall(name, args)
        if t.kind == "sym" and t.value == "{":
            return self.brace_literal()
        if t.kind == "sym" and t.value == "[":
            self.advance()
            items = []
            if not self.accept_sym("]"):
                items.append(self.term())
                while self.accept_sym(","):
                    items.append(self.term())
                self.expect_sym("]")
            return CollectionLiteral("list", items)
        if t.kind == "sym" and t.value == "(":
            # a type hint such as (int)? is not supported; tuples neither
            raise InvalidRequest("tuple literals and type casts are not supported by the CQL test server")
        self.error("a value")

    def brace_literal(self):
        self.expect_sym("{")
        if self.accept_sym("}"):
            return CollectionLiteral("empty", [])
        first = self.term()
        if self.accept_sym(":"):
            items = [(first, self.term())]
            while self.accept_sym(","):
                k = self.term()
                self.expect_sym(":")
                items.append((k, self.term()))
            self.expect_sym("}")
            return CollectionLiteral("map", items)
        items = [first]
        while self.accept_sym(","):
            items.append(self.term())
        self.expect_sym("}")
        return CollectionLiteral("set", items)

    def int_value(self):
        """An intValue of the grammar: an integer literal or a bind marker."""
        t = self.tok
        if t.kind in ("qmark", "named"):
            return self.marker()
        if t.kind == "integer":
            self.advance()
            return Literal("integer", int(t.value), t.value)
        self.error("an integer or bind marker")

    def using_clause(self, allow_ttl: bool = True) -> UsingClause:
        using = UsingClause()
        if not self.accept_kw("using"):
            return using
        while True:
            word = self.expect_kw("ttl", "timestamp") if allow_ttl else self.expect_kw("timestamp")
            if word == "ttl":
                if using.ttl is not None:
                    raise InvalidRequest("Multiple definitions for TTL")
                using.ttl = self.int_value()
            else:
                if using.timestamp is not None:
                    raise InvalidRequest("Multiple definitions for TIMESTAMP")
                using.timestamp = self.int_value()
            if not self.accept_kw("and"):
                return using

    # -- relations -------------------------------------------------------------------------------
    def where_clause(self) -> List[Relation]:
        rels = [self.relation()]
        while self.accept_kw("and"):
            rels.append(self.relation())
        return rels

    def relation(self) -> Relation:
        if self.tok.kind == "sym" and self.tok.value == "(":
            raise InvalidRequest("multi-column relations are not supported by the CQL test server")
        if self.tok.is_kw("token") and self.peek().value == "(":
            raise InvalidRequest("token() relations are not supported by the CQL test server")
        col = self.ident("column name")
        return self.operator_and_term(col, allow_neq=False)

    def operator_and_term(self, col: str, allow_neq: bool) -> Relation:
        t = self.tok
        if t.kind == "sym" and t.value in ("=", "<", ">", "<=", ">=", "!="):
            self.advance()
            if t.value == "!=" and not allow_neq:
                raise InvalidRequest('Unsupported "!=" relation: %s != ...' % col)
            return Relation(col, t.value, self.term())
        if t.is_kw("in"):
            self.advance()
            if self.tok.kind in ("qmark", "named"):
                return Relation(col, "IN", self.marker())
            self.expect_sym("(")
            items = []
            if not self.accept_sym(")"):
                items.append(self.term())
                while self.accept_sym(","):
                    items.append(self.term())
                self.expect_sym(")")
            return Relation(col, "IN", items)
        if t.is_kw("contains", "like", "is"):
            raise InvalidRequest("%s relations are not supported by the CQL test server" % t.value.upper())
        if t.kind == "sym" and t.value in ("[", "."):
            raise InvalidRequest("element and field conditions are not supported by the CQL test server")
        self.error("a relation operator")

    def if_clause(self) -> Tuple[bool, List[Relation]]:
        if not self.accept_kw("if"):
            return False, []
        if self.accept_kw("exists"):
            return True, []
        conds = [self.operator_and_term(self.ident("column name"), allow_neq=True)]
        while self.accept_kw("and"):
            conds.append(self.operator_and_term(self.ident("column name"), allow_neq=True))
        return False, conds

    # -- DML ---------------------------------------------------------------------------------------
    def select(self) -> Select:
        self.expect_kw("select")
        if self.tok.is_kw("json"):
            raise InvalidRequest("SELECT JSON is not supported by the CQL test server")
        distinct = False
        if self.tok.is_kw("distinct") and not (self.peek().kind == "sym" and self.peek().value in (",",)) \
                and not self.peek().is_kw("from"):
            self.advance()
            distinct = True
        selectors = None
        if not self.accept_sym("*"):
            selectors = [self.selector()]
            while self.accept_sym(","):
                selectors.append(self.selector())
        self.expect_kw("from")
        ks, table = self.qualified_name()
        where = self.where_clause() if self.accept_kw("where") else []
        if self.tok.is_kw("group"):
            raise InvalidRequest("GROUP BY is not supported by the CQL test server")
        order_by = []
        if self.accept_kw("order"):
            self.expect_kw("by")
            while True:
                col = self.ident("column name")
                direction = "asc"
                if self.tok.is_kw("asc", "desc"):
                    direction = self.advance().value
                order_by.append((col, direction))
                if not self.accept_sym(","):
                    break
        if self.tok.is_kw("per"):
            raise InvalidRequest("PER PARTITION LIMIT is not supported by the CQL test server")
        limit = None
        if self.accept_kw("limit"):
            limit = self.int_value()
        allow_filtering = False
        if self.accept_kw("allow"):
            self.expect_kw("filtering")
            allow_filtering = True
        return Select(ks, table, selectors, where, order_by, limit, allow_filtering, distinct)

    def selector(self) -> Selector:
        t = self.tok
        if t.kind == "ident" and self.peek().kind == "sym" and self.peek().value == "(":
            fname = self.advance().value
            self.expect_sym("(")
            if fname == "count":
                if self.accept_sym("*"):
                    arg = None
                elif self.tok.kind == "integer" and self.tok.value == "1":
                    self.advance()
                    arg = None
                else:
                    arg = self.ident("column name")
                self.expect_sym(")")
                sel = Selector("count", arg)
            elif fname in ("ttl", "writetime"):
                col = self.ident("column name")
                self.expect_sym(")")
                sel = Selector(fname, col)
            else:
                raise InvalidRequest("Unknown function '%s'" % fname)
        else:
            sel = Selector("column", self.ident("a selector"))
        if self.accept_kw("as"):
            sel.alias = self.ident("alias")
        return sel

    def insert(self) -> Insert:
        self.expect_kw("insert")
        self.expect_kw("into")
        ks, table = self.qualified_name()
        if self.tok.is_kw("json"):
            raise InvalidRequest("INSERT JSON is not supported by the CQL test server")
        self.expect_sym("(")
        cols = [self.ident("column name")]
        while self.accept_sym(","):
            cols.append(self.ident("column name"))
        self.expect_sym(")")
        self.expect_kw("values")
        self.expect_sym("(")
        values = [self.term()]
        while self.accept_sym(","):
            values.append(self.term())
        self.expect_sym(")")
        if_not_exists = False
        if self.accept_kw("if"):
            self.expect_kw("not")
            self.expect_kw("exists")
            if_not_exists = True
        using = self.using_clause()
        return Insert(ks, table, cols, values, if_not_exists, using)

    def update(self) -> Update:
        self.expect_kw("update")
        ks, table = self.qualified_name()
        using = self.using_clause()
        self.expect_kw("set")
        assignments = [self.assignment()]
        while self.accept_sym(","):
            assignments.append(self.assignment())
        self.expect_kw("where")
        where = self.where_clause()
        if_exists, conds = self.if_clause()
        return Update(ks, table, using, assignments, where, if_exists, conds)

    def assignment(self):
        col = self.ident("column name")
        if self.tok.kind == "sym" and self.tok.value == "[":
            raise InvalidRequest("element assignments (c[k] = v) are not supported by the CQL test server")
        self.expect_sym("=")
        if self.tok.kind in ("ident", "qident") and self.peek().kind == "sym" and self.peek().value in ("+", "-"):
            raise InvalidRequest("collection and counter operations (c = c + v) are not supported by the CQL test server")
        value = self.term()
        if self.tok.kind == "sym" and self.tok.value in ("+", "-"):
            raise InvalidRequest("collection and counter operations (c = c + v) are not supported by the CQL test server")
        return col, value

    def delete(self) -> Delete:
        self.expect_kw("delete")
        cols = []
        if not self.tok.is_kw("from"):
            cols.append(self.delete_selection())
            while self.accept_sym(","):
                cols.append(self.delete_selection())
        self.expect_kw("from")
        ks, table = self.qualified_name()
        if self.tok.is_kw("using") and self.peek().is_kw("ttl"):
            raise InvalidRequest("Time to live is not allowed for DELETE statements")
        using = self.using_clause(allow_ttl=False)
        self.expect_kw("where")
        where = self.where_clause()
        if_exists, conds = self.if_clause()
        return Delete(ks, table, cols, using, where, if_exists, conds)

    def delete_selection(self) -> str:
        col = self.ident("column name")
        if self.tok.kind == "sym" and self.tok.value in ("[", "."):
            raise InvalidRequest("deleting collection elements or fields is not supported by the CQL test server")
        return col

    def batch(self) -> Batch:
        self.expect_kw("begin")
        kind = "logged"
        if self.accept_kw("unlogged"):
            kind = "unlogged"
        elif self.accept_kw("counter"):
            kind = "counter"
        self.expect_kw("batch")
        using = self.using_clause(allow_ttl=False)
        stmts = []
        while not self.tok.is_kw("apply"):
            if self.tok.is_kw("insert"):
                stmts.append(self.insert())
            elif self.tok.is_kw("update"):
                stmts.append(self.update())
            elif self.tok.is_kw("delete"):
                stmts.append(self.delete())
            else:
                if self.tok.kind == "eof":
                    self.error("APPLY BATCH")
                raise InvalidRequest("Invalid statement in batch: only UPDATE, INSERT and DELETE statements are allowed.")
            self.accept_sym(";")
        self.expect_kw("apply")
        self.expect_kw("batch")
        return Batch(kind, using, stmts)

    # -- DDL ---------------------------------------------------------------------------------------
    def if_not_exists(self) -> bool:
        if self.accept_kw("if"):
            self.expect_kw("not")
            self.expect_kw("exists")
            return True
        return False

    def if_exists(self) -> bool:
        if self.accept_kw("if"):
            self.expect_kw("exists")
            return True
        return False

    def create(self):
        self.expect_kw("create")
        if self.accept_kw("keyspace", "schema"):
            ine = self.if_not_exists()
            name = self.ident("keyspace name")
            self.expect_kw("with")
            return CreateKeyspace(name, ine, self.properties())
        if self.accept_kw("table", "columnfamily"):
            return self.create_table()
        what = self.tok.value.upper() if self.tok.kind != "eof" else ""
        if what in ("INDEX", "CUSTOM", "TYPE", "FUNCTION", "AGGREGATE", "MATERIALIZED", "TRIGGER", "ROLE",
                    "USER", "OR"):
            raise InvalidRequest("CREATE %s is not supported by the CQL test server" % what)
        self.error("KEYSPACE or TABLE")

    def properties(self) -> dict:
        props = {}
        while True:
            name = self.ident("property name")
            self.expect_sym("=")
            if name in props:
                raise SyntaxException("Multiple definition for property %s" % name)
            props[name] = self.property_value()
            if not self.accept_kw("and"):
                return props

    def property_value(self):
        t = self.tok
        if t.kind == "sym" and t.value == "{":
            lit = self.brace_literal()
            if lit.kind == "set":
                self.error("a map")
            out = {}
            for k, v in lit.items:
                if not isinstance(k, Literal) or not isinstance(v, Literal):
                    raise SyntaxException("Invalid property value")
                out[str(k.value)] = v.text if v.kind not in ("string",) else v.value
            return out
        if t.kind in ("string", "integer", "float"):
            self.advance()
            return t.value
        if t.kind == "ident":
            self.advance()
            return t.value
        self.error("a property value")

    def create_table(self) -> CreateTable:
        ine = self.if_not_exists()
        ks, name = self.qualified_name()
        self.expect_sym("(")
        columns: List[ColumnDef] = []
        pk: List[str] = []
        ck: List[str] = []
        pk_declared = 0
        while True:
            if self.tok.is_kw("primary") and self.peek().is_kw("key"):
                self.advance()
                self.advance()
                pk_declared += 1
                self.expect_sym("(")
                if self.accept_sym("("):
                    pk.append(self.ident("column name"))
                    while self.accept_sym(","):
                        pk.append(self.ident("column name"))
                    self.expect_sym(")")
                else:
                    pk.append(self.ident("column name"))
                while self.accept_sym(","):
                    ck.append(self.ident("column name"))
                self.expect_sym(")")
            else:
                cname = self.ident("column name")
                ctype = self.type_text()
                static = self.accept_kw("static")
                columns.append(ColumnDef(cname, ctype, static))
                if self.tok.is_kw("primary"):
                    self.advance()
                    self.expect_kw("key")
                    pk_declared += 1
                    pk.append(cname)
            if self.accept_sym(","):
                continue
            self.expect_sym(")")
            break
        if pk_declared != 1:
            raise InvalidRequest("No PRIMARY KEY specifed for table '%s' (exactly one required)" % name
                                 if pk_declared == 0 else "Multiple PRIMARY KEYs specifed (exactly one required)")
        options: dict = {}
        order: List[Tuple[str, str]] = []
        compact = False
        if self.accept_kw("with"):
            while True:
                if self.accept_kw("clustering"):
                    self.expect_kw("order")
                    self.expect_kw("by")
                    self.expect_sym("(")
                    while True:
                        col = self.ident("column name")
                        direction = self.expect_kw("asc", "desc")
                        order.append((col, direction))
                        if not self.accept_sym(","):
                            break
                    self.expect_sym(")")
                elif self.accept_kw("compact"):
                    self.expect_kw("storage")
                    compact = True
                else:
                    pname = self.ident("property name")
                    self.expect_sym("=")
                    if pname in options:
                        raise SyntaxException("Multiple definition for property %s" % pname)
                    options[pname] = self.property_value()
                if not self.accept_kw("and"):
                    break
        return CreateTable(ks, name, ine, columns, pk, ck, options, order, compact)

    def type_text(self) -> str:
        t = self.tok
        if t.kind not in ("ident",):
            self.error("a type")
        self.advance()
        out = t.value
        if self.accept_sym("<"):
            parts = [self.type_text()]
            while self.accept_sym(","):
                parts.append(self.type_text())
            self.expect_sym(">")
            out += "<%s>" % ", ".join(parts)
        return out

    def alter_table(self) -> "AlterTable":
        if_exists = self.if_exists()
        ks, name = self.qualified_name()
        if self.accept_kw("add"):
            ine = self.if_not_exists()
            cols = []
            if self.accept_sym("("):
                while True:
                    cols.append(self.alter_column_def())
                    if not self.accept_sym(","):
                        break
                self.expect_sym(")")
            else:
                cols.append(self.alter_column_def())
            return AlterTable(ks, name, "add", cols, if_exists=if_exists, if_column_exists=ine)
        if self.accept_kw("drop"):
            ie = self.if_exists()
            names = []
            if self.accept_sym("("):
                while True:
                    names.append(ColumnDef(self.ident("column name"), ""))
                    if not self.accept_sym(","):
                        break
                self.expect_sym(")")
            else:
                names.append(ColumnDef(self.ident("column name"), ""))
            if self.tok.is_kw("using"):
                raise InvalidRequest("ALTER TABLE ... DROP ... USING TIMESTAMP is not supported by the CQL test server")
            return AlterTable(ks, name, "drop", names, if_exists=if_exists, if_column_exists=ie)
        if self.accept_kw("with"):
            options = {}
            while True:
                pname = self.ident("property name")
                self.expect_sym("=")
                options[pname] = self.property_value()
                if not self.accept_kw("and"):
                    break
            return AlterTable(ks, name, "with", options=options, if_exists=if_exists)
        what = self.tok.value.upper() if self.tok.kind != "eof" else ""
        if what in ("RENAME", "ALTER"):
            raise InvalidRequest("ALTER TABLE ... %s is not supported by the CQL test server" % what)
        self.error("ADD, DROP or WITH")

    def alter_column_def(self) -> ColumnDef:
        cname = self.ident("column name")
        ctype = self.type_text()
        if self.accept_kw("static"):
            return ColumnDef(cname, ctype, True)
        return ColumnDef(cname, ctype)

    def drop(self):
        self.expect_kw("drop")
        if self.accept_kw("keyspace", "schema"):
            ie = self.if_exists()
            return DropKeyspace(self.ident("keyspace name"), ie)
        if self.accept_kw("table", "columnfamily"):
            ie = self.if_exists()
            ks, name = self.qualified_name()
            return DropTable(ks, name, ie)
        what = self.tok.value.upper() if self.tok.kind != "eof" else ""
        if what in ("INDEX", "TYPE", "FUNCTION", "AGGREGATE", "MATERIALIZED", "TRIGGER", "ROLE", "USER"):
            raise InvalidRequest("DROP %s is not supported by the CQL test server" % what)
        self.error("KEYSPACE or TABLE")


def parse(text: str) -> Parsed:
    """Parse one CQL statement. Raises SyntaxException (0x2000) or InvalidRequest (0x2200)."""
    return Parser(text).parse()
