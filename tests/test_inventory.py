"""The job inventory read from EM (`query?type=Job`, `GET /jobs/{id}?format=Entity`): the
EM Help Center's job entity, every field the bot reads, in XML; the same job as a query
answer in v12 JSON and v13 camelCase JSON; and what a job without a schedule or retries
looks like."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lxml import etree

from bot.errors import EMRejected, ParseError
from bot.models import Job, Page
from bot.veeam.inventory import parse_jobs
from tests.conftest import FIXTURES

ENTITY = FIXTURES / "em13" / "job_entity.xml"
DB_BACKUP = Job(
    uid="urn:veeam:Job:5658281f-625e-4627-89dd-d2a0c48be99e",
    name="DB Backup",
    job_type="Backup",
    platform="HyperV",
    server="srv12.tech.local",
    description="Backup of MS SQL Server DB",
    schedule_configured=True,
    schedule_enabled=True,
    next_run=datetime(2020, 2, 1, 17, 0, tzinfo=UTC),
    retry_times=3,
    retry_timeout_min=10,
)


def test_the_help_center_job_entity_every_field() -> None:
    (job,), page = parse_jobs(ENTITY.read_bytes())
    assert job == DB_BACKUP and page is None
    assert job.retry_window == timedelta(minutes=30)


def as_dict(el: Any) -> Any:
    """The entity as EM's v12 JSON writes it: element names as keys, links as a list."""
    out: dict[str, Any] = dict(el.attrib)
    for child in el:
        name = etree.QName(child).localname
        if name == "Links":
            out["Links"] = [dict(x.attrib) for x in child]
        elif len(child):
            out[name] = as_dict(child)
        else:
            text = child.text
            out[name] = {"true": True, "false": False}.get(text or "", text)
    return out


def query_json(camel: bool) -> bytes:
    entity = as_dict(etree.fromstring(ENTITY.read_bytes()))
    doc: dict[str, Any] = {
        "Refs": None,
        "Entities": {"Jobs": {"Jobs": [entity]}, "BackupJobSessions": None},
        "PagingInfo": {"Links": [], "PageNum": 1, "PageSize": 100, "PagesCount": 1},
    }
    text = json.dumps(doc)
    if camel:  # v13: every key's first letter lower-cased, values as they were
        text = json.dumps(_camel(doc))
    return text.encode()


def _camel(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k[:1].lower() + k[1:]: _camel(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_camel(x) for x in obj]
    return obj


@pytest.mark.parametrize("camel", [False, True])
def test_the_same_job_in_a_json_query_answer(camel: bool) -> None:
    (job,), page = parse_jobs(query_json(camel))
    assert job == DB_BACKUP and page == Page(1, 100, 1)


def test_a_job_without_a_schedule_or_retries() -> None:
    body = ENTITY.read_text()
    body = body.replace("<ScheduleEnabled>true", "<ScheduleEnabled>false")
    body = body.replace("<ScheduleConfigured>true", "<ScheduleConfigured>false")
    body = body.replace("<NextRun>2020-02-01T17:00:00Z</NextRun>", "")
    body = body.replace("<RetrySpecified>true", "<RetrySpecified>false")
    (job,), _ = parse_jobs(body.encode())
    assert (job.schedule_configured, job.schedule_enabled, job.next_run) == (False, False, None)
    assert (job.retry_times, job.retry_window) == (0, timedelta(0))


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        (b'<Error StatusCode="401" Message="Unauthorized" />', EMRejected, "Unauthorized"),
        (b'{"Message": "Bad filter", "StatusCode": 400}', EMRejected, "Bad filter"),
        (b'{"Entities": {"Jobs": {"Jobs": [{"Name": "x"}]}}}', ParseError, "without a UID"),
        (b"<Job", ParseError, "malformed XML"),
        (b"{", ParseError, "malformed JSON"),
    ],
)
def test_bad_answers_are_one_clear_error(body: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        parse_jobs(body)
