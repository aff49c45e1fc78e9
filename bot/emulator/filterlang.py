"""The emulator's own parser for EM's `filter=` grammar.

It deliberately shares no code with the client's filter builder, so each checks the other.

    expr       := term ( (';' | ',') term )*     ; ';' AND binds tighter than ',' OR
    term       := '(' expr ')' | FIELD op VALUE
    op         := '==' | '!=' | '>=' | '<=' | '>' | '<'
    VALUE      := '"' chars, '""' for a quote '"' | bare chars up to ; , ) (spaces dropped)

Field names and enum values are case-insensitive; enums compare by ordinal
(Success < Warning < Failed); free-text values compare exactly (ordinal).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Predicate = Callable[[Any], bool]


class FilterSyntaxError(ValueError):
    """A filter EM would reject; the message mimics EM's `Error` body."""


ENUMS: dict[str, tuple[str, ...]] = {
    "result": ("Success", "Warning", "Failed"),
    "state": ("InProgress", "Pending", "Completed"),
}
# filter field (lower case) → (record attribute, kind)
FIELDS: dict[str, tuple[str, str]] = {
    "uid": ("uid", "str"),
    "name": ("name", "str"),
    "creationtime": ("created", "time"),
    "creationtimeutc": ("created", "time"),
    "endtime": ("ended", "time"),
    "endtimeutc": ("ended", "time"),
    "state": ("state", "enum"),
    "result": ("result", "enum"),
    "reason": ("reason", "str"),
    "totalsize": ("total_size", "int"),
    "jobsessionuid": ("job_session_uid", "str"),
    "jobuid": ("job_uid", "str"),
    "jobname": ("job", "str"),
    "backupserveruid": ("server_uid", "str"),
    "backupservername": ("server", "str"),
    "vmdisplayname": ("vm", "str"),
    "vmuid": ("vm_uid", "str"),
}
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


# What a job session (BackupJobSession, ReplicaJobSession) may be filtered on.
JOB_ENUMS: dict[str, tuple[str, ...]] = {
    "result": ("Success", "Warning", "Failed"),
    "state": ("Starting", "Stopping", "Working", "Pausing", "Resuming", "Stopped"),
    "jobtype": (
        "Backup", "BackupCopy", "ImmediateBackupCopy", "ImmediateBackupCopyWorker",
        "AgentBackup", "AgentManagement", "NasBackup", "Replica",
    ),
}  # fmt: skip
JOB_FIELDS: dict[str, tuple[str, str]] = {
    "uid": ("uid", "str"),
    "name": ("name", "str"),
    "jobtype": ("job_type", "enum"),
    "jobuid": ("job_uid", "str"),
    "jobname": ("job", "str"),
    "creationtime": ("created", "time"),
    "endtime": ("ended", "time"),
    "state": ("state", "enum"),
    "result": ("result", "enum"),
    "isretry": ("is_retry", "bool"),
    "backupserveruid": ("server_uid", "str"),
    "backupservername": ("server", "str"),
}


# What a job (`query?type=Job`) may be filtered on (EM 13.x, GET /query?type=Job).
JOB_ENTITY_FIELDS: dict[str, tuple[str, str]] = {
    "uid": ("uid", "str"),
    "name": ("name", "str"),
    "description": ("description", "str"),
    "nextrun": ("next_run", "time"),
    "jobtype": ("job_type", "enum"),
    "platform": ("platform", "enum"),
    "scheduleconfigured": ("schedule_configured", "bool"),
    "scheduleenabled": ("schedule_enabled", "bool"),
    "backupserveruid": ("server_uid", "str"),
    "backupservername": ("server", "str"),
}
JOB_ENTITY_ENUMS: dict[str, tuple[str, ...]] = {
    "jobtype": ("Backup", "BackupCopy", "ImmediateBackupCopy", "Replica"),
    "platform": ("VMware", "HyperV", "vCloud"),
}


@dataclass(frozen=True)
class Grammar:
    """The fields (field → (attribute, kind)) and enums one query type accepts."""

    fields: dict[str, tuple[str, str]]
    enums: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Comparison:
    field: str  # lower-case filter field
    attr: str
    op: str
    value: Any
    members: tuple[str, ...] = ()  # an enum field's values, in EM's order


@dataclass(frozen=True)
class Group:
    kind: str  # "and" | "or"
    parts: tuple[Node, ...]


Node = Comparison | Group


class _Parser:
    def __init__(self, text: str, grammar: Grammar) -> None:
        self.text = text
        self.pos = 0
        self.grammar = grammar

    def fail(self, what: str) -> FilterSyntaxError:
        return FilterSyntaxError(f"Invalid filter expression: {what} at position {self.pos}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1

    def parse(self) -> Node:
        node = self.expr()
        self.skip_ws()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected {self.peek()!r}")
        return node

    def expr(self) -> Node:
        ors = [self.and_chain()]
        while self.peek() == ",":
            self.pos += 1
            ors.append(self.and_chain())
        return ors[0] if len(ors) == 1 else Group("or", tuple(ors))

    def and_chain(self) -> Node:
        ands = [self.term()]
        while self.peek() == ";":
            self.pos += 1
            ands.append(self.term())
        return ands[0] if len(ands) == 1 else Group("and", tuple(ands))

    def term(self) -> Node:
        self.skip_ws()
        if self.peek() == "(":
            self.pos += 1
            node = self.expr()
            self.skip_ws()
            if self.peek() != ")":
                raise self.fail("missing ')'")
            self.pos += 1
            self.skip_ws()
            return node
        return self.comparison()

    def comparison(self) -> Comparison:
        start = self.pos
        while self.peek().isalnum():
            self.pos += 1
        name = self.text[start : self.pos]
        if not name:
            raise self.fail("expected a field name")
        self.skip_ws()
        op = next(
            (o for o in ("==", "!=", ">=", "<=", ">", "<") if self.text.startswith(o, self.pos)), ""
        )
        if not op:
            raise self.fail(f"expected an operator after {name}")
        self.pos += len(op)
        raw = self.value()
        spec = self.grammar.fields.get(name.lower())
        if spec is None:
            raise FilterSyntaxError(f"Unknown field [{name}]")
        members = self.grammar.enums.get(name.lower(), ()) if spec[1] == "enum" else ()
        return Comparison(name.lower(), spec[0], op, _coerce(name, spec[1], raw, members), members)

    def value(self) -> str:
        self.skip_ws()
        if self.peek() == '"':
            return self.quoted()
        start = self.pos
        while self.peek() not in ("", ";", ",", ")"):
            self.pos += 1
        return self.text[start : self.pos].replace(" ", "")

    def quoted(self) -> str:
        self.pos += 1
        out: list[str] = []
        while True:
            end = self.text.find('"', self.pos)
            if end < 0:
                raise self.fail("unterminated quoted value")
            out.append(self.text[self.pos : end])
            self.pos = end + 1
            if self.peek() != '"':
                break
            out.append('"')
            self.pos += 1
        self.skip_ws()
        return "".join(out)


def _coerce(name: str, kind: str, raw: str, members: tuple[str, ...]) -> Any:
    if kind == "time":
        return parse_literal_time(name, raw)
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise FilterSyntaxError(f"Value [{raw}] of field [{name}] is not a number") from None
    if kind == "bool":
        if raw.lower() not in ("true", "false"):
            raise FilterSyntaxError(f"Value [{raw}] of field [{name}] is not true or false")
        return raw.lower() == "true"
    if kind == "enum":
        for i, member in enumerate(members):
            if member.lower() == raw.lower():
                return i
        raise FilterSyntaxError(f"Value [{raw}] is not valid for field [{name}]")
    return raw


def parse_literal_time(name: str, raw: str) -> datetime:
    """EM datetime literal: with or without `Z`, or a bare date; read as UTC."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise FilterSyntaxError(f"Value [{raw}] of field [{name}] is not a date") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


TASKS = Grammar(FIELDS, ENUMS)
JOBS = Grammar(JOB_FIELDS, JOB_ENUMS)
JOB_ENTITIES = Grammar(JOB_ENTITY_FIELDS, JOB_ENTITY_ENUMS)


def parse_filter(text: str, grammar: Grammar = TASKS) -> Node:
    """Parse a filter of task sessions (or of `grammar`'s type); raises FilterSyntaxError
    with an EM-like message."""
    if not text.strip():
        raise FilterSyntaxError("Invalid filter expression: empty")
    return _Parser(text, grammar).parse()


def compile_filter(node: Node) -> Predicate:
    """Node → a predicate over an emulator record. A catch-up filters a history of 100,000
    sessions in one pass, so each test is kept cheap: enum tests are set membership (an OR of
    them on one field, one set), and short AND/OR chains are single expressions."""
    if isinstance(node, Comparison):
        return _compare(node)
    merged = _enum_set(node)
    if merged is not None:
        get, passing = operator.attrgetter(merged[0]), merged[1]
        return lambda r: get(r) in passing
    parts = tuple(compile_filter(p) for p in node.parts)
    if node.kind == "and":
        if len(parts) == 2:
            a, b = parts
            return lambda r: a(r) and b(r)
        if len(parts) == 3:
            a, b, c = parts
            return lambda r: a(r) and b(r) and c(r)
        return lambda r: all(p(r) for p in parts)
    if len(parts) == 2:
        a, b = parts
        return lambda r: a(r) or b(r)
    return lambda r: any(p(r) for p in parts)


def _enum_passing(node: Comparison) -> frozenset[str]:
    """Stored enum values that pass; an unknown one (e.g. Result "None") never does."""
    fn = OPS[node.op]
    return frozenset(m for i, m in enumerate(node.members) if fn(i, node.value))


def _enum_set(node: Group) -> tuple[str, frozenset[str]] | None:
    """An OR of enum tests on one field as (attribute, passing values), else None."""
    fields = {p.field if isinstance(p, Comparison) and p.members else "" for p in node.parts}
    if node.kind != "or" or len(fields) != 1 or not fields.pop():
        return None
    tests = [p for p in node.parts if isinstance(p, Comparison)]
    return tests[0].attr, frozenset().union(*(_enum_passing(t) for t in tests))


def _compare(node: Comparison) -> Predicate:
    fn, get, value = OPS[node.op], operator.attrgetter(node.attr), node.value
    if node.members:
        passing = _enum_passing(node)
        return lambda r: get(r) in passing
    if isinstance(value, datetime):
        return lambda r: (v := get(r)) is not None and fn(v, value)
    return lambda r: fn(get(r), value)


def range_bounds(node: Node, attr: str) -> tuple[datetime | None, datetime | None]:
    """Lower/upper bounds on `attr` implied by top-level AND terms (for index use)."""
    terms = node.parts if isinstance(node, Group) and node.kind == "and" else (node,)
    lo = hi = None
    for t in terms:
        if isinstance(t, Comparison) and t.attr == attr and isinstance(t.value, datetime):
            if t.op in (">=", ">") and (lo is None or t.value > lo):
                lo = t.value
            elif t.op in ("<=", "<") and (hi is None or t.value < hi):
                hi = t.value
    return lo, hi
