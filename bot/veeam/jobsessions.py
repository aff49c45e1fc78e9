"""EM's job sessions (`query?type=BackupJobSession|ReplicaJobSession`): a job's own run and
result, in XML and in JSON of either casing (v12 PascalCase, v13 camelCase).

Job sessions are few (one per job run, against one per VM for task sessions), so every
field is looked up by name; `FailureMessage` is absent in some XML examples and null in
JSON when there is none, `IsRetry` stands first in JSON and last in XML."""

from __future__ import annotations

from typing import Any

from bot.errors import ParseError
from bot.models import JobSession, Page
from bot.veeam.fields import by_form, flag_of, job_name, number_of, page_info, parse_time, text_of
from bot.veeam.jsonform import lower, query_result
from bot.veeam.xml import local_name, query_root

JOB_SESSION_TYPES = ("BackupJobSession", "ReplicaJobSession")
_PLURALS = frozenset(t.lower() + "s" for t in JOB_SESSION_TYPES)


def parse_job_sessions(body: bytes) -> tuple[list[JobSession], Page | None]:
    """Parse one query answer of job sessions; raises EMRejected or ParseError."""
    return by_form(body, _from_xml, _from_json)


def _from_xml(data: bytes) -> tuple[list[JobSession], Page | None]:
    out: list[JobSession] = []
    page = None
    for child in query_root(data):
        local = local_name(child.tag)
        if local == "Entities":
            for plural in child:
                if local_name(plural.tag).lower() in _PLURALS:
                    out += [_xml_entity(el) for el in plural if isinstance(el.tag, str)]
        elif local == "PagingInfo":
            page = page_info(child.get("PageNum"), child.get("PageSize"), child.get("PagesCount"))
    return out, page


def _xml_entity(el: Any) -> JobSession:
    fields: dict[str, Any] = {k.lower(): v for k, v in el.attrib.items()}
    links: list[dict[str, Any]] = []
    for child in el:
        if not isinstance(child.tag, str):
            continue
        name = local_name(child.tag)
        if name == "Links":
            links = [{k.lower(): v for k, v in link.attrib.items()} for link in child]
        else:
            fields[name.lower()] = child.text
    fields["type"] = fields.get("type") or local_name(el.tag)
    return _session(fields, links)


def _from_json(data: bytes) -> tuple[list[JobSession], Page | None]:
    top = query_result(data)
    out: list[JobSession] = []
    for key, wrapper in lower(top.get("entities")).items():
        if key in _PLURALS and wrapper:
            items = lower(wrapper).get(key) or []
            if not isinstance(items, list):
                raise ParseError(f"EM sent an unexpected shape under {key!r}")
            for item in items:
                fields = lower(item)
                links = fields.get("links")
                out.append(_session(fields, [lower(x) for x in links or [] if x]))
    paging = lower(top.get("paginginfo"))
    return out, page_info(paging.get("pagenum"), paging.get("pagesize"), paging.get("pagescount"))


def _session(f: dict[str, Any], links: list[dict[str, Any]]) -> JobSession:
    """A job session from its fields (names lower-cased) and links, XML or JSON alike."""
    uid = text_of(f.get("uid"))
    if not uid:
        raise ParseError("EM sent a job session without a UID")
    server = next(
        (text_of(x.get("name")) for x in links
         if text_of(x.get("type")) == "BackupServerReference" and text_of(x.get("rel")) == "Up"),
        "",
    )  # fmt: skip
    name = text_of(f.get("name"))
    return JobSession(
        uid=uid,
        type=text_of(f.get("type")) or [*uid.split(":"), "", "", ""][2],
        name=name,
        job=text_of(f.get("jobname")) or job_name(name),
        job_uid=text_of(f.get("jobuid")),
        job_type=text_of(f.get("jobtype")),
        server=server,
        state=text_of(f.get("state")),
        result=text_of(f.get("result")),
        failure=text_of(f.get("failuremessage")).strip(),
        is_retry=flag_of(f.get("isretry")),
        progress=number_of(f.get("progress")),
        created=parse_time(text_of(f.get("creationtimeutc")) or None),
        ended=parse_time(text_of(f.get("endtimeutc")) or None),
    )
