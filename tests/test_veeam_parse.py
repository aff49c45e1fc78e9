"""EM answers → TaskSession, over real HTTP: seed XML, real v12/v13 captures, XML/JSON/BOM."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from bot.emulator.server import Emulator
from bot.emulator.wire import camel
from bot.errors import EMRejected, ParseError
from bot.models import TaskSession
from bot.veeam.client import EMClient
from bot.veeam.fields import job_name, parse_time
from bot.veeam.parse import parse_page
from bot.veeam.xml import _drop_default_namespace
from tests.conftest import CAPTURES, SEED_XML, veeam_settings

NS = b"http://www.veeam.com/ent/v1.0"
XSI = b"http://www.w3.org/2001/XMLSchema-instance"
XSD = b"http://www.w3.org/2001/XMLSchema"
V12_TASKS = CAPTURES / "backup_jobs_tasks_sessions_metrics_v12.json"
V13_TASKS = CAPTURES / "backup_jobs_tasks_sessions_metrics_v13.json"


def served(emulator: Emulator, body: bytes, ctype: str, fmt: str = "json") -> list[TaskSession]:
    """Serve `body` verbatim as EM's query answer and read it through the real client."""
    emulator.canned.append((body, ctype))
    with EMClient(veeam_settings(emulator, format=fmt)) as c:
        return list(c.query("BackupTaskSession", ""))


def test_seed_xml_example_parses_to_the_documented_fields(emulator: Emulator) -> None:
    sessions = served(emulator, SEED_XML.read_bytes(), "application/xml", "xml")
    assert len(sessions) == 2
    first = sessions[0]
    assert first.uid == "urn:veeam:ReplicaTaskSession:efe448ad-6d52-496b-ba79-decd586713eb"
    assert first.type == "ReplicaTaskSession"
    assert first.vm == "apache02"
    assert first.name == "apache02@2021-06-17 20:00:18"
    assert first.job == "Replication Job 2"
    assert first.server == "enterprise06.tech.local"
    assert first.job_session_uid == (
        "urn:veeam:ReplicaJobSession:90e440bb-8af1-4e3f-8022-bfd89dd267a0"
    )
    assert first.created == datetime(2021, 6, 17, 20, 0, 18, 60000, tzinfo=UTC)
    assert first.ended == datetime(2021, 6, 17, 20, 2, 36, 993000, tzinfo=UTC)
    assert (first.state, first.result, first.reason) == ("Completed", "Success", "")
    assert first.total_size == 8589934592
    assert sessions[1].uid.endswith("3be8eb42-7d94-4789-b2cf-891a2d9aed41")
    assert sessions[1].ended == datetime(2021, 6, 17, 15, 19, 31, 547000, tzinfo=UTC)


V12_EXPECTED = [
    (
        "urn:veeam:BackupTaskSession:5c8add49-6b08-4147-bc38-00293667728a",
        "MYHOST",
        "Success",
        datetime(2026, 6, 15, 5, 50, 19, 807000, tzinfo=UTC),
        datetime(2026, 6, 15, 5, 50, 44, 620000, tzinfo=UTC),
    ),
    (
        "urn:veeam:BackupTaskSession:63f5c565-ef34-441f-ad7f-005efb16ca91",
        "MYHOST2",
        "Success",
        datetime(2026, 6, 15, 5, 49, 18, 990000, tzinfo=UTC),
        datetime(2026, 6, 15, 5, 49, 37, 723000, tzinfo=UTC),
    ),
]


def test_real_v12_capture(emulator: Emulator) -> None:
    sessions = served(emulator, V12_TASKS.read_bytes(), "application/json; charset=utf-8")
    got = [(s.uid, s.vm, s.result, s.created, s.ended) for s in sessions]
    assert got == V12_EXPECTED
    assert {s.type for s in sessions} == {"BackupTaskSession"}
    assert all(s.server == "myhost.mydomain.org" and s.state == "Completed" for s in sessions)
    assert all(s.job and "@" not in s.job for s in sessions)


def test_real_v13_capture_with_a_real_failure(emulator: Emulator) -> None:
    sessions = served(emulator, V13_TASKS.read_bytes(), "application/json; charset=utf-8")
    assert len(sessions) == 4
    failed = sessions[0]
    assert failed.uid == "urn:veeam:BackupTaskSession:0bae7844-d3d7-4097-95b8-893315310c51"
    assert (failed.vm, failed.result, failed.state) == ("myhost", "Failed", "Completed")
    assert failed.reason.startswith("Processing myhost Error: An error occurred while quiescing")
    assert failed.job == "H3_BACKUP_DDH_ORACLE_DEV_SYSONLY"
    assert failed.server == "myhost2.mydomain.org"
    assert failed.created == datetime(2026, 6, 16, 6, 22, 59, 399120, tzinfo=UTC)
    assert failed.ended == datetime(2026, 6, 16, 6, 23, 52, 728467, tzinfo=UTC)
    assert sessions[1].total_size == 214748364800


def _recase(obj: Any, fn: Any) -> Any:
    if isinstance(obj, dict):
        return {fn(k): _recase(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_recase(v, fn) for v in obj]
    return obj


def _pascal(key: str) -> str:
    return {"uid": "UID"}.get(key, key[:1].upper() + key[1:])


@pytest.mark.parametrize("capture", [V12_TASKS, V13_TASKS], ids=["v12", "v13"])
def test_captures_parse_the_same_in_either_casing_and_with_a_bom(
    emulator: Emulator, capture: Path
) -> None:
    doc = json.loads(capture.read_text(encoding="utf-8"))
    as_camel = json.dumps(_recase(doc, camel)).encode()
    as_pascal = json.dumps(_recase(doc, _pascal)).encode()
    original = served(emulator, capture.read_bytes(), "application/json")
    assert original
    assert served(emulator, as_camel, "application/json") == original
    assert served(emulator, as_pascal, "application/json") == original
    assert served(emulator, b"\xef\xbb\xbf" + as_camel, "application/json") == original


@pytest.mark.parametrize(
    ("fmt", "camel_case", "bom"),
    [("xml", False, False), ("json", False, False), ("json", True, False), ("json", True, True)],
    ids=["xml", "json-pascal", "json-camel", "json-camel-bom"],
)
def test_every_wire_form_gives_identical_sessions(
    emulator: Emulator, fmt: str, camel_case: bool, bom: bool
) -> None:
    emulator.camel_case, emulator.bom = camel_case, bom
    with EMClient(veeam_settings(emulator, format=fmt)) as c:
        got = list(c.query("ReplicaTaskSession", "", sort_asc="CreationTime"))
    expected = sorted(
        (s for s in emulator.store.all() if s.type == "ReplicaTaskSession"),
        key=lambda s: s.created,
    )
    assert [s.uid for s in got] == [s.uid for s in expected]
    by_uid = {s.uid: s for s in expected}
    for s in got:
        e = by_uid[s.uid]
        assert (s.vm, s.job, s.server, s.result, s.reason, s.ended, s.total_size) == (
            e.vm,
            e.job,
            e.server,
            e.result,
            e.reason,
            e.ended,
            e.total_size,
        )
    assert any(s.ended is None for s in got), "running sessions have no EndTimeUTC"
    assert any("\n" in s.reason for s in got), "multi-line reasons survive"


def test_timestamps_with_any_fraction_length() -> None:
    assert parse_time("2021-06-17T20:00:18Z") == datetime(2021, 6, 17, 20, 0, 18, tzinfo=UTC)
    assert parse_time("2021-06-17T20:00:18.06Z") == datetime(
        2021, 6, 17, 20, 0, 18, 60000, tzinfo=UTC
    )
    assert parse_time("2026-06-16T06:33:10.6595591Z") == datetime(
        2026, 6, 16, 6, 33, 10, 659559, tzinfo=UTC
    )
    assert parse_time("2026-06-16T06:33:10") == datetime(2026, 6, 16, 6, 33, 10, tzinfo=UTC)
    assert parse_time(None) is None
    assert parse_time("") is None


def test_job_name_is_the_part_before_the_last_at() -> None:
    assert job_name("Replication Job 2@2021-06-17 20:00:05") == "Replication Job 2"
    assert job_name("ops@corp Job@2021-06-17 20:00:05") == "ops@corp Job"
    assert job_name("NoTimestamp") == "NoTimestamp"


def test_missing_end_time_in_json() -> None:
    body = json.dumps(
        {
            "Entities": {
                "ReplicaTaskSessions": {
                    "ReplicaTaskSessions": [
                        {
                            "UID": "u1",
                            "State": "InProgress",
                            "Result": "Success",
                            "Links": None,
                            "CreationTimeUTC": "2026-01-01T00:00:00Z",
                            "TotalSize": None,
                        }
                    ]
                }
            },
            "PagingInfo": {"PageNum": 1, "PageSize": 10, "PagesCount": 1},
        }
    ).encode()
    (s,), page = parse_page(body)
    assert s.ended is None and s.total_size == 0 and s.job == ""
    assert page is not None and page.count == 1


@pytest.mark.parametrize(
    "empty",
    [
        b'{"Entities": {"ReplicaTaskSessions": null}, "PagingInfo": null}',
        b'{"Entities": {"ReplicaTaskSessions": {"ReplicaTaskSessions": []}}}',
        b'{"entities": null, "refs": null}',
        b'<QueryResult xmlns="http://www.veeam.com/ent/v1.0"><Entities><ReplicaTaskSessions />'
        b'</Entities><PagingInfo PagesCount="0" PageSize="5" PageNum="1"/></QueryResult>',
    ],
)
def test_empty_results_in_every_shape(empty: bytes) -> None:
    assert parse_page(empty)[0] == []


def test_em_error_bodies_become_one_clear_error() -> None:
    xml = (
        b'<?xml version="1.0" encoding="utf-8"?><Error Message="Unknown field [Foo]" '
        b'StatusCode="400" xmlns="http://www.veeam.com/ent/v1.0"/>'
    )
    with pytest.raises(
        EMRejected, match=r"EM rejected the query: Unknown field \[Foo\] \(HTTP 400\)"
    ):
        parse_page(xml)
    camel_json = (
        b'{"firstChanceExceptionMessage":null,"message":"Node [root] does not exist.",'
        b'"stackTrace":null,"status":null,"statusCode":400}'
    )
    with pytest.raises(EMRejected, match=r"Node \[root\] does not exist"):
        parse_page(camel_json)


@pytest.mark.parametrize(
    "bad",
    [
        b"<QueryResult><Entities>",
        b'{"Entities": ',
        b"Service Unavailable",
        b"",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b"<QueryResult><Entities><ReplicaTaskSessions><ReplicaTaskSession UID='&b;'/>"
        b"</ReplicaTaskSessions></Entities></QueryResult>",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<QueryResult>&x;</QueryResult>",
    ],
)
def test_broken_or_hostile_documents_are_refused(bad: bytes) -> None:
    with pytest.raises(ParseError):
        parse_page(bad)


def _variants(xml: bytes) -> dict[str, bytes]:
    """The same answer written the ways another EM build or a proxy might write it."""
    pretty = etree.tostring(etree.fromstring(xml), pretty_print=True)
    reordered = etree.fromstring(xml)
    for el in reordered.iter():
        if isinstance(el.tag, str):
            items = list(el.attrib.items())[::-1]
            el.attrib.clear()
            for k, v in items:
                el.set(k, v)
    commented = etree.fromstring(xml)
    for el in commented.iter("{*}ReplicaTaskSession"):
        el.insert(0, etree.Comment(" note "))
    prefixed = xml.replace(b" xmlns=", b" xmlns:v=", 1).replace(b"<QueryResult", b"<v:QueryResult")
    prefixed = re.sub(rb"<(/?)(?!v:)([A-Za-z])", rb"<\1v:\2", prefixed)
    no_ns = xml.replace(b' xmlns="http://www.veeam.com/ent/v1.0"', b"", 1)
    em12_root = re.sub(rb"<QueryResult [^>]*>", b'<QueryResult xmlns="%s">' % NS, xml, count=1)
    return {
        "EM 12 root (default namespace only)": em12_root,
        "pretty": pretty,
        "reordered attributes": etree.tostring(reordered),
        "comments": etree.tostring(commented),
        "prefixed namespace": prefixed,
        "no namespace": no_ns,
    }


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        # EM 13.1 as its reference shows it: the default namespace after xsi and xsd.
        (
            b'<QueryResult xmlns:xsi="%s" xmlns:xsd="%s" xmlns="%s"><Entities/>' % (XSI, XSD, NS),
            b'<QueryResult xmlns:xsi="%s" xmlns:xsd="%s"><Entities/>' % (XSI, XSD),
        ),
        (b'<QueryResult xmlns="%s"><Entities/>' % NS, b"<QueryResult><Entities/>"),
        (
            b'<?xml version="1.0" encoding="utf-8"?>\n<QueryResult\n  xmlns = \'%s\' >' % NS,
            b'<?xml version="1.0" encoding="utf-8"?>\n<QueryResult >',
        ),
        # A prefixed namespace and no namespace are left alone.
        (b'<v:QueryResult xmlns:v="%s">' % NS, b'<v:QueryResult xmlns:v="%s">' % NS),
        (b"<QueryResult><Entities/>", b"<QueryResult><Entities/>"),
    ],
)
def test_the_root_default_namespace_is_dropped_wherever_it_stands(
    root: bytes, expected: bytes
) -> None:
    """The fast path reads plain tag names; EM 13 writes its default namespace last."""
    assert _drop_default_namespace(root) == expected


def test_xml_layout_differences_do_not_change_what_is_read(emulator: Emulator) -> None:
    """Indentation, attribute order, comments and namespace spelling are not data."""
    with httpx.Client(base_url=emulator.url, auth=("demo", "demo")) as http:
        token = http.post("/api/sessionMngr/?v=latest").headers["X-RestSvcSessionId"]
        xml = http.get(
            "/api/query",
            params={"type": "ReplicaTaskSession", "format": "Entities", "pageSize": "1000"},
            headers={"X-RestSvcSessionId": token},
        ).content
    reference, _ = parse_page(xml)
    assert len(reference) > 100
    assert any(s.reason and s.job and s.server for s in reference)
    for name, variant in _variants(xml).items():
        assert variant != xml, name
        assert parse_page(variant)[0] == reference, name
