"""Safe construction of EM `filter=` expressions.

Every string and datetime value is quoted with `"`, embedded quotes are doubled, datetimes
are written as `"YYYY-MM-DDTHH:MM:SSZ"` and OR groups are parenthesised. Field names come
only from our own code and are checked against a strict pattern.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")
OPERATORS = ("==", "!=", "<", "<=", ">", ">=")


def quote(value: str) -> str:
    """Quote a literal for EM, doubling embedded double quotes."""
    return '"' + value.replace('"', '""') + '"'


def em_datetime(value: datetime) -> str:
    """An aware datetime as EM's quoted UTC literal, truncated to the second."""
    if value.tzinfo is None:
        raise ValueError("datetimes sent to EM must be timezone-aware")
    return quote(value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def cmp(field: str, op: str, value: str | datetime | int) -> str:
    """One comparison with its value quoted (integers are sent bare)."""
    if not _FIELD.match(field):
        raise ValueError(f"not an EM field name: {field!r}")
    if op not in OPERATORS:
        raise ValueError(f"not an EM operator: {op!r}")
    if isinstance(value, bool):
        raise TypeError("booleans are not supported in filters")
    if isinstance(value, datetime):
        literal = em_datetime(value)
    elif isinstance(value, int):
        literal = str(value)
    else:
        literal = quote(value)
    return f"{field}{op}{literal}"


def any_of(terms: list[str]) -> str:
    """OR of terms; parenthesised when there is more than one."""
    terms = [t for t in terms if t]
    if len(terms) <= 1:
        return terms[0] if terms else ""
    return "(" + ",".join(terms) + ")"


def all_of(terms: list[str]) -> str:
    """AND of terms (each OR group already parenthesised by `any_of`)."""
    return ";".join(t for t in terms if t)


def one_of(field: str, values: list[str]) -> str:
    """`(Field=="a",Field=="b")`, or a single comparison."""
    return any_of([cmp(field, "==", v) for v in values])
