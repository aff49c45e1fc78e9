"""The /veeam and CLI query grammar (pure), and the EM filters it produces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.errors import QueryError
from bot.slash.query import USAGE, parse_query, tokenize

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("failed vm:sql01", ["failed", "vm:sql01"]),
        ('job:"Replication Job 2" failed', ["job:Replication Job 2", "failed"]),
        ('vm:"sql;prod"', ["vm:sql;prod"]),
        ('vm:"say \\"hi\\""', ['vm:say "hi"']),
        ("vm:“Smart quotes”", ["vm:Smart quotes"]),
        ("  failed   warning  ", ["failed", "warning"]),
        ('vm:""', ["vm:"]),
    ],
)
def test_tokenize(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


def test_defaults_are_last_24h_limit_20_all_results() -> None:
    q = parse_query("", now=NOW)
    assert q.results == () and q.limit == 20
    assert q.since == NOW - timedelta(hours=24) and q.until is None
    assert q.em_filter() == 'CreationTime>="2026-11-28T12:00:00Z"'


def test_full_query_filter() -> None:
    q = parse_query(
        'failed warning vm:sql01 job:"Replication Job 2" server:vbr01 state:completed '
        "type:backup since:7d until:2026-11-28 limit:50",
        now=NOW,
    )
    assert q.types == ("BackupTaskSession",) and q.limit == 50
    assert q.em_filter() == (
        '(Result=="Failed",Result=="Warning");VmDisplayName=="sql01";'
        'JobName=="Replication Job 2";BackupServerName=="vbr01";State=="Completed";'
        'CreationTime>="2026-11-22T12:00:00Z";CreationTime<="2026-11-28T00:00:00Z"'
    )


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        ("90m", NOW - timedelta(minutes=90)),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T08:30", datetime(2026, 11, 1, 8, 30, tzinfo=UTC)),
    ],
)
def test_since_forms(since: str, expected: datetime) -> None:
    assert parse_query(f"since:{since}", now=NOW).since == expected


def test_hostile_values_are_quoted_literals() -> None:
    q = parse_query('vm:"a;Result==Success" job:"x,(y)" server:"q""r"', now=NOW)
    flt = q.em_filter()
    assert 'VmDisplayName=="a;Result==Success"' in flt
    assert 'JobName=="x,(y)"' in flt
    assert 'BackupServerName=="qr"' in flt  # "q""r" in the grammar is two quoted runs: qr


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("faild", "unknown word 'faild'"),
        ("host:x", "unknown key 'host:'"),
        ("vm:", "'vm:' needs a value"),
        ("limit:0", "limit:0 must be a whole number from 1 to 100"),
        ("limit:101", "limit:101"),
        ("limit:abc", "limit:abc"),
        ("since:yesterday", "since:yesterday is not a time"),
        ("type:tape", "type:tape is not one of replica, backup"),
        ("state:done", "state:done is not one of"),
        ('vm:"open', "a double quote is not closed"),
        ("since:1d until:3d", "since: is later than until:"),
        ("share", "unknown word 'share'"),
    ],
)
def test_bad_words_get_one_clear_error_with_usage(text: str, named: str) -> None:
    with pytest.raises(QueryError) as err:
        parse_query(text, now=NOW)
    first, usage = str(err.value).split("\n")
    assert named in first
    assert usage == USAGE


def test_share_only_where_allowed() -> None:
    assert parse_query("failed share", now=NOW, allow_share=True).share is True
