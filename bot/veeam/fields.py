"""The fields every form of EM's answers shares: timestamps (any fraction length, with or
without an offset), job names, sizes, paging, and building a TaskSession fast."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from bot.errors import ParseError
from bot.models import Page, TaskSession

BOM = b"\xef\xbb\xbf"
T = TypeVar("T")
PLURALS = frozenset({"replicatasksessions", "backuptasksessions"})
_fromiso = datetime.fromisoformat
# A NamedTuple's own __new__ is a Python function; tuple.__new__ builds the same object directly.
new_session: Callable[[type[TaskSession], tuple[Any, ...]], TaskSession] = tuple.__new__


def parse_time(text: str | None) -> datetime | None:
    """EM timestamp → aware UTC datetime. Missing, empty or null gives None."""
    if not text:
        return None
    try:
        value = _fromiso(text)
    except (ValueError, TypeError) as exc:
        raise ParseError(f"EM sent an unreadable timestamp: {str(text)[:40]!r}") from exc
    tz = value.tzinfo
    if tz is UTC:
        return value
    return value.replace(tzinfo=UTC) if tz is None else value.astimezone(UTC)


def job_name(job_session_name: str) -> str:
    """`Replication Job 2@2021-06-17 20:00:05` → `Replication Job 2` (split at the last @)."""
    head, sep, _ = job_session_name.rpartition("@")
    return head if sep else job_session_name


def times(created: Any, ended: Any) -> tuple[datetime | None, datetime | None]:
    """A session's start and end as UTC. The common case, strings ending in Z, parses straight
    to UTC; anything else goes through parse_time, which also raises the clear error."""
    try:
        c = _fromiso(created) if created else None
        e = _fromiso(ended) if ended else None
    except (ValueError, TypeError):
        return parse_time(created), parse_time(ended)
    if c is not None and c.tzinfo is not UTC:
        c = parse_time(created)
    if e is not None and e.tzinfo is not UTC:
        e = parse_time(ended)
    return c, e


def size_of(value: Any) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ParseError(f"EM sent an unreadable TotalSize: {str(value)[:40]!r}") from exc


def page_info(num: Any, size: Any, count: Any) -> Page | None:
    try:
        return Page(int(num), int(size), int(count))
    except (TypeError, ValueError):
        return None


def text_of(value: Any) -> str:
    """A field as text: "" for a missing or null one."""
    return "" if value is None else str(value)


def flag_of(value: Any) -> bool:
    """A boolean field: JSON's true, or XML's "true" (any case)."""
    if isinstance(value, bool):
        return value
    return text_of(value).strip().lower() == "true"


def number_of(value: Any) -> int:
    """A whole-number field (0 when missing); raises ParseError for anything else."""
    try:
        return int(value or 0)
    except (TypeError, ValueError) as exc:
        raise ParseError(f"EM sent an unreadable number: {text_of(value)[:40]!r}") from exc


def by_form(body: bytes, xml: Callable[[bytes], T], json: Callable[[bytes], T]) -> T:
    """An answer read by `xml` or by `json`, whichever form it is in (a UTF-8 BOM and leading
    whitespace tolerated); ParseError for an empty answer or one in neither form."""
    data = body.removeprefix(BOM).lstrip()
    if data.startswith(b"<"):
        return xml(data)
    if data.startswith(b"{"):
        return json(data)
    if not data:
        raise ParseError("EM sent an empty answer")
    raise ParseError(f"EM sent something that is neither XML nor JSON: {data[:40]!r}")
