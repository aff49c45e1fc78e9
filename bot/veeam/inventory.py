"""EM's jobs (`query?type=Job`, `GET /jobs/{id}?format=Entity`): name, type, platform,
backup server, whether a schedule is configured and enabled, the next run and the retry
options, in XML and in JSON of either casing. The rest of a job (its objects, guest
processing, retention, the schedule's grids) is not read."""

from __future__ import annotations

from typing import Any

from bot.errors import ParseError
from bot.models import Job, Page
from bot.veeam.fields import by_form, flag_of, number_of, page_info, parse_time, text_of
from bot.veeam.jsonform import decode, lower, query_result
from bot.veeam.xml import local_name, query_root, xml_root


def parse_jobs(body: bytes) -> tuple[list[Job], Page | None]:
    """The jobs of a query answer, or the one job of an entity answer."""
    return by_form(body, _from_xml, _from_json)


def _from_xml(data: bytes) -> tuple[list[Job], Page | None]:
    root = xml_root(data)
    if local_name(root.tag) == "Job":
        return [_job(_xml_fields(root))], None
    out: list[Job] = []
    page = None
    for child in query_root(data, root):
        local = local_name(child.tag)
        if local == "Entities":
            for plural in child:
                if local_name(plural.tag) == "Jobs":
                    out += [_job(_xml_fields(el)) for el in plural if isinstance(el.tag, str)]
        elif local == "PagingInfo":
            page = page_info(child.get("PageNum"), child.get("PageSize"), child.get("PagesCount"))
    return out, page


def _xml_fields(el: Any) -> dict[str, Any]:
    """An element as nested dicts keyed by lower-cased names (attributes too); repeated
    children keep the first; `links` is the list of link attributes."""
    out: dict[str, Any] = {k.lower(): v for k, v in el.attrib.items()}
    for child in el:
        if not isinstance(child.tag, str):
            continue
        name = local_name(child.tag).lower()
        if name == "links":
            out["links"] = [{k.lower(): v for k, v in x.attrib.items()} for x in child]
        elif name not in out:
            out[name] = _xml_fields(child) if len(child) else child.text
    return out


def _from_json(data: bytes) -> tuple[list[Job], Page | None]:
    top = decode(data)
    if "uid" in top and "entities" not in top:  # GET /jobs/{id}?format=Entity
        return [_job(_deep_lower(top))], None
    top = query_result(data, top)
    items = lower(lower(top.get("entities")).get("jobs")).get("jobs") or []
    if not isinstance(items, list):
        raise ParseError("EM sent an unexpected shape under 'jobs'")
    paging = lower(top.get("paginginfo"))
    page = page_info(paging.get("pagenum"), paging.get("pagesize"), paging.get("pagescount"))
    return [_job(_deep_lower(item)) for item in items], page


def _deep_lower(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k).lower(): _deep_lower(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_lower(x) for x in obj]
    return obj


def _job(f: dict[str, Any]) -> Job:
    uid = text_of(f.get("uid"))
    if not uid:
        raise ParseError("EM sent a job without a UID")
    links = f.get("links") or []
    server = next(
        (text_of(x.get("name")) for x in links if isinstance(x, dict)
         and text_of(x.get("type")) == "BackupServerReference" and text_of(x.get("rel")) == "Up"),
        "",
    )  # fmt: skip
    options = _get(f, "jobscheduleoptions", "standart", "retryoptions")
    specified = flag_of(options.get("retryspecified"))
    return Job(
        uid=uid,
        name=text_of(f.get("name")),
        job_type=text_of(f.get("jobtype")),
        platform=text_of(f.get("platform")),
        server=server,
        description=text_of(f.get("description")),
        schedule_configured=flag_of(f.get("scheduleconfigured")),
        schedule_enabled=flag_of(f.get("scheduleenabled")),
        next_run=parse_time(text_of(f.get("nextrun")) or None),
        retry_times=number_of(options.get("retrytimes")) if specified else 0,
        retry_timeout_min=number_of(options.get("retrytimeout")) if specified else 0,
    )


def _get(f: dict[str, Any], *path: str) -> dict[str, Any]:
    node: Any = f
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}
