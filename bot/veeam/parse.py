"""Parse EM `/api/query` answers (XML or JSON, v12 PascalCase or v13 camelCase).

XML is parsed by lxml with entity expansion, DTD loading and network access off; a document
that carries a DTD is refused. JSON keys are matched case-insensitively, a UTF-8 BOM is
tolerated, timestamps may have any fraction length and `EndTimeUTC` may be missing.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from bot.errors import EMRejected, ParseError
from bot.models import Page, TaskSession

TASK_TYPES = frozenset({"replicatasksession", "backuptasksession"})
_PLURALS = frozenset({"replicatasksessions", "backuptasksessions"})
_BOM = b"\xef\xbb\xbf"
_BARE_AMP = re.compile(rb"&(?!(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);)")
_local = threading.local()


def _xml_parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
        )
        _local.parser = parser
    return parser


def parse_time(text: str | None) -> datetime | None:
    """EM timestamp → aware UTC datetime. Missing, empty or null gives None."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ParseError(f"EM sent an unreadable timestamp: {text[:40]!r}") from exc
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def job_name(job_session_name: str) -> str:
    """`Replication Job 2@2021-06-17 20:00:05` → `Replication Job 2` (split at the last @)."""
    head, sep, _ = job_session_name.rpartition("@")
    return head if sep else job_session_name


def _links(links: Iterable[tuple[str, str, str]]) -> tuple[str, str]:
    """(rel, type, name) triples → (job name, backup server name)."""
    job = server = ""
    for rel, typ, name in links:
        if rel != "Up" or not name:
            continue
        if typ == "BackupServerReference":
            server = name
        elif typ.endswith("JobSessionReference"):
            job = job_name(name)
    return job, server


def _size(value: Any) -> int:
    try:
        return int(value) if value not in (None, "") else 0
    except (TypeError, ValueError) as exc:
        raise ParseError(f"EM sent an unreadable TotalSize: {str(value)[:40]!r}") from exc


def parse_page(body: bytes) -> tuple[list[TaskSession], Page | None]:
    """Parse one query answer; raises EMRejected for an `Error` body, ParseError otherwise."""
    data = body.removeprefix(_BOM).lstrip()
    if data.startswith(b"<"):
        return _parse_xml(data)
    if data.startswith(b"{"):
        return _parse_json(data)
    if not data:
        raise ParseError("EM sent an empty answer")
    raise ParseError(f"EM sent something that is neither XML nor JSON: {data[:40]!r}")


# ------------------------------------------------------------------------ XML
def _local_name(tag: Any) -> str:
    if not isinstance(tag, str):
        return ""
    return tag[tag.rfind("}") + 1 :]


def _xml_root(data: bytes) -> Any:
    try:
        return etree.fromstring(data, parser=_xml_parser())
    except etree.XMLSyntaxError as exc:
        # EM's own documentation shows raw `&` in paging links; tolerate exactly that.
        fixed = _BARE_AMP.sub(b"&amp;", data)
        if fixed != data:
            try:
                return etree.fromstring(fixed, parser=_xml_parser())
            except etree.XMLSyntaxError:
                pass
        raise ParseError(f"EM sent malformed XML: {exc}") from exc


def _parse_xml(data: bytes) -> tuple[list[TaskSession], Page | None]:
    root = _xml_root(data)
    if root.getroottree().docinfo.doctype:
        raise ParseError("EM's XML answer carries a DTD, which is refused")
    name = _local_name(root.tag)
    if name == "Error":
        raise EMRejected(_xml_error(root), int(root.get("StatusCode") or 0))
    sessions: list[TaskSession] = []
    page = None
    for child in root:
        local = _local_name(child.tag)
        if local == "Entities":
            for plural in child:
                if _local_name(plural.tag).lower() in _PLURALS:
                    sessions.extend(_xml_session(item) for item in plural if _is_el(item))
        elif local == "PagingInfo":
            page = _page(child.get("PageNum"), child.get("PageSize"), child.get("PagesCount"))
    if name != "QueryResult":
        raise ParseError(f"EM sent an unexpected XML document <{name}>")
    return sessions, page


def _is_el(node: Any) -> bool:
    return isinstance(node.tag, str)


def _xml_error(root: Any) -> str:
    message = root.get("Message") or ""
    if not message:
        for child in root:
            if _local_name(child.tag) == "FirstChanceExceptionMessage" and child.text:
                message = child.text
    return message.strip() or "no message"


def _xml_session(el: Any) -> TaskSession:
    fields: dict[str, str] = {}
    links: list[tuple[str, str, str]] = []
    for child in el:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        local = tag[tag.rfind("}") + 1 :]
        if local == "Links":
            links = [(lk.get("Rel", ""), lk.get("Type", ""), lk.get("Name", "")) for lk in child]
        else:
            fields[local] = child.text or ""
    job, server = _links(links)
    get = el.get
    return TaskSession(
        uid=get("UID", ""),
        type=get("Type") or _local_name(el.tag),
        name=get("Name", ""),
        vm=get("VmDisplayName", ""),
        job=job,
        job_session_uid=fields.get("JobSessionUid", ""),
        server=server,
        state=fields.get("State", ""),
        result=fields.get("Result", ""),
        reason=fields.get("Reason", ""),
        created=parse_time(fields.get("CreationTimeUTC")),
        ended=parse_time(fields.get("EndTimeUTC")),
        total_size=_size(fields.get("TotalSize")),
    )


def _page(num: Any, size: Any, count: Any) -> Page | None:
    try:
        return Page(int(num), int(size), int(count))
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------- JSON
def _lower(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        return {}
    return {str(k).lower(): v for k, v in obj.items()}


def _parse_json(data: bytes) -> tuple[list[TaskSession], Page | None]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"EM sent malformed JSON: {exc}") from exc
    top = _lower(doc)
    if "entities" not in top and "message" in top and "statuscode" in top:
        message = top.get("message") or top.get("firstchanceexceptionmessage") or "no message"
        raise EMRejected(str(message).strip(), int(top.get("statuscode") or 0))
    if "entities" not in top and "refs" not in top:
        raise ParseError("EM sent a JSON document that is not a query result")
    sessions: list[TaskSession] = []
    for key, wrapper in _lower(top.get("entities")).items():
        if key in _PLURALS and wrapper:
            items = _lower(wrapper).get(key) or []
            if not isinstance(items, list):
                raise ParseError(f"EM sent an unexpected shape under {key!r}")
            sessions.extend(_json_session(_lower(item)) for item in items)
    paging = _lower(top.get("paginginfo"))
    page = _page(paging.get("pagenum"), paging.get("pagesize"), paging.get("pagescount"))
    return sessions, page


def _json_session(item: dict[str, Any]) -> TaskSession:
    links = []
    for link in item.get("links") or ():
        lk = _lower(link)
        links.append((lk.get("rel") or "", lk.get("type") or "", lk.get("name") or ""))
    job, server = _links(links)
    return TaskSession(
        uid=item.get("uid") or "",
        type=item.get("type") or "",
        name=item.get("name") or "",
        vm=item.get("vmdisplayname") or "",
        job=job,
        job_session_uid=item.get("jobsessionuid") or "",
        server=server,
        state=item.get("state") or "",
        result=item.get("result") or "",
        reason=item.get("reason") or "",
        created=parse_time(item.get("creationtimeutc")),
        ended=parse_time(item.get("endtimeutc")),
        total_size=_size(item.get("totalsize")),
    )
