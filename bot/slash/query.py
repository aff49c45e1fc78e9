"""The query grammar shared by `python -m bot query` and `/veeam`: text → a validated Query.

    failed warning vm:sql01 job:"Replication Job 2" server:vbr01 state:completed
    type:replica since:7d until:2026-11-01 limit:50

Pure: no I/O, and `now` is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.config.convert import parse_duration
from bot.errors import QueryError
from bot.models import TYPE_ALIASES
from bot.veeam import filters as F

RESULT_WORDS = {"failed": "Failed", "warning": "Warning", "success": "Success"}
STATES = {"inprogress": "InProgress", "pending": "Pending", "completed": "Completed"}
KEYS = ("vm", "job", "server", "state", "type", "since", "until", "limit", "em")
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
DEFAULT_SINCE = timedelta(hours=24)
USAGE = (
    "usage: [failed|warning|success ...] [vm:NAME] [job:NAME] [server:NAME] "
    "[state:completed|inprogress|pending] [type:replica|backup] [since:7d|24h|90m|YYYY-MM-DD] "
    "[until:...] [limit:N (max 100)] [em:NAME (one Enterprise Manager of several)]; "
    'quote values with spaces: job:"Replication Job 2"'
)
_QUOTES = {'"': '"', "“": "”", "”": "”", "„": "“"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?)?(Z|[+-]\d{2}:?\d{2})?")


@dataclass(frozen=True)
class Query:
    results: tuple[str, ...] = ()
    vm: str | None = None
    job: str | None = None
    server: str | None = None
    state: str | None = None
    types: tuple[str, ...] = ("ReplicaTaskSession",)
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT
    em: str | None = None  # one Enterprise Manager of several, by its configured name
    share: bool = False
    words: tuple[str, ...] = field(default=(), compare=False)

    def em_filter(self) -> str:
        """The EM filter for this query; every value is a quoted literal."""
        terms = [F.one_of("Result", list(self.results))] if self.results else []
        for fname, value in (
            ("VmDisplayName", self.vm),
            ("JobName", self.job),
            ("BackupServerName", self.server),
            ("State", self.state),
        ):
            if value is not None:
                terms.append(F.cmp(fname, "==", value))
        if self.since is not None:
            terms.append(F.cmp("CreationTime", ">=", self.since))
        if self.until is not None:
            terms.append(F.cmp("CreationTime", "<=", self.until))
        return F.all_of(terms)


def tokenize(text: str) -> list[str]:
    """Split on blanks; double quotes (straight or typographic) group words; `\\"` is a quote."""
    tokens: list[str] = []
    buf: list[str] = []
    closing = ""
    started = False
    i = 0
    while i < len(text):
        ch = text[i]
        if closing:
            if ch == "\\" and text[i + 1 : i + 2] in ('"', "\\"):
                buf.append(text[i + 1])
                i += 2
                continue
            if ch == closing or (ch == '"' and closing != '"'):
                closing = ""
            else:
                buf.append(ch)
        elif ch in _QUOTES:
            closing, started = _QUOTES[ch], True
        elif ch.isspace():
            if buf or started:
                tokens.append("".join(buf))
            buf, started = [], False
        else:
            buf.append(ch)
        i += 1
    if closing:
        raise QueryError(f"a double quote is not closed in: {text.strip()}\n{USAGE}")
    if buf or started:
        tokens.append("".join(buf))
    return tokens


def _when(key: str, value: str, now: datetime) -> datetime:
    if _DATE.fullmatch(value):
        parsed = datetime.fromisoformat(value.replace(" ", "T"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    try:
        return now - parse_duration(value)
    except ValueError:
        raise QueryError(
            f"{key}:{value} is not a time; use 90m, 24h, 7d or a date like 2026-11-01\n{USAGE}"
        ) from None


def parse_query(
    text: str,
    *,
    now: datetime,
    default_types: tuple[str, ...] = ("ReplicaTaskSession",),
    allow_share: bool = False,
) -> Query:
    """Parse query words. Raises QueryError naming the first bad word, with the usage line."""
    opts: dict[str, object] = {"types": default_types, "since": now - DEFAULT_SINCE}
    results: list[str] = []
    share = False
    tokens = tokenize(text)
    for token in tokens:
        key, sep, value = token.partition(":")
        low = key.lower()
        if not sep:
            if low in RESULT_WORDS:
                if RESULT_WORDS[low] not in results:
                    results.append(RESULT_WORDS[low])
            elif low == "share" and allow_share:
                share = True
            else:
                raise QueryError(f"unknown word '{token}'\n{USAGE}")
            continue
        if low not in KEYS:
            raise QueryError(f"unknown key '{key}:' in '{token}'\n{USAGE}")
        if value == "":
            raise QueryError(f"'{key}:' needs a value, e.g. {low}:sql01\n{USAGE}")
        opts.update(_key_value(low, value, now))
    since, until = opts.get("since"), opts.get("until")
    if isinstance(since, datetime) and isinstance(until, datetime) and since > until:
        raise QueryError(f"since: is later than until:\n{USAGE}")
    return Query(results=tuple(results), share=share, words=tuple(tokens), **opts)  # type: ignore[arg-type]


def _key_value(key: str, value: str, now: datetime) -> dict[str, object]:
    if key in ("vm", "job", "server", "em"):
        return {key: value}
    if key == "state":
        if value.lower() not in STATES:
            raise QueryError(f"state:{value} is not one of completed, inprogress, pending\n{USAGE}")
        return {"state": STATES[value.lower()]}
    if key == "type":
        if value.lower() not in TYPE_ALIASES:
            raise QueryError(f"type:{value} is not one of replica, backup\n{USAGE}")
        return {"types": (TYPE_ALIASES[value.lower()],)}
    if key == "limit":
        if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
            raise QueryError(f"limit:{value} must be a whole number from 1 to {MAX_LIMIT}\n{USAGE}")
        return {"limit": int(value)}
    return {key: _when(key, value, now)}
