"""Parse EM `/api/query` answers (XML or JSON, v12 PascalCase or v13 camelCase).

XML goes through lxml with entity expansion, DTD loading and network access off; a document
that carries a DTD is refused. JSON keys are matched
case-insensitively (resolved once per page), a UTF-8 BOM is tolerated, timestamps may have
any fraction length and `EndTimeUTC` may be missing.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from lxml import etree

from bot.errors import EMRejected, ParseError
from bot.models import Page, TaskSession

_PLURALS = frozenset({"replicatasksessions", "backuptasksessions"})
_BOM = b"\xef\xbb\xbf"
_BARE_AMP = re.compile(rb"&(?!(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);)")
_fromiso = datetime.fromisoformat
_local_state = threading.local()


def _xml_parser() -> etree.XMLParser:
    """One hardened parser per thread (lxml parsers must not be shared across threads)."""
    parser: etree.XMLParser | None = getattr(_local_state, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_blank_text=True,
            collect_ids=False,
        )
        _local_state.parser = parser
    return parser


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


def _size(value: Any) -> int:
    if value is None or value == "":
        return 0
    try:
        return int(value)
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


def _page(num: Any, size: Any, count: Any) -> Page | None:
    try:
        return Page(int(num), int(size), int(count))
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------------ XML
def _local(tag: Any) -> str:
    return tag[tag.rfind("}") + 1 :] if isinstance(tag, str) else ""


def _xml_root(data: bytes) -> Any:
    try:
        root = etree.fromstring(data, parser=_xml_parser())
    except etree.XMLSyntaxError as exc:
        # EM's own documentation shows raw `&` in paging links; tolerate exactly that.
        fixed = _BARE_AMP.sub(b"&amp;", data)
        if fixed == data:
            raise ParseError(f"EM sent malformed XML: {exc}") from exc
        try:
            root = etree.fromstring(fixed, parser=_xml_parser())
        except etree.XMLSyntaxError:
            raise ParseError(f"EM sent malformed XML: {exc}") from exc
    if getattr(root.getroottree().docinfo, "doctype", ""):
        raise ParseError("EM's XML answer carries a DTD, which is refused")
    return root


def _parse_xml(data: bytes) -> tuple[list[TaskSession], Page | None]:
    root = _xml_root(data)
    name = _local(root.tag)
    if name == "Error":
        raise EMRejected(_xml_error(root), int(root.get("StatusCode") or 0))
    if name != "QueryResult":
        raise ParseError(f"EM sent an unexpected XML document <{name}>")
    sessions: list[TaskSession] = []
    page = None
    for child in root:
        local = _local(child.tag)
        if local == "Entities":
            for plural in child:
                if _local(plural.tag).lower() in _PLURALS:
                    sessions += [_xml_session(i) for i in plural if isinstance(i.tag, str)]
        elif local == "PagingInfo":
            page = _page(child.get("PageNum"), child.get("PageSize"), child.get("PagesCount"))
    return sessions, page


def _xml_error(root: Any) -> str:
    message = root.get("Message") or ""
    if not message:
        for child in root:
            if _local(child.tag) == "FirstChanceExceptionMessage" and child.text:
                message = child.text
    return message.strip() or "no message"


def _xml_session(el: Any) -> TaskSession:
    f: dict[str, str | None] = {}
    job = server = ""
    for child in el:
        tag = child.tag
        if not isinstance(tag, str):  # comments, processing instructions
            continue
        local = tag[tag.rfind("}") + 1 :]
        if local != "Links":
            f[local] = child.text
            continue
        for link in child:
            if link.get("Rel") == "Up":
                typ, lname = link.get("Type", ""), link.get("Name") or ""
                if typ == "BackupServerReference":
                    server = lname
                elif typ.endswith("JobSessionReference"):
                    job = job_name(lname)
    get = el.get
    return TaskSession(
        get("UID", ""),
        get("Type") or _local(el.tag),
        get("Name", ""),
        get("VmDisplayName", ""),
        job,
        f.get("JobSessionUid") or "",
        server,
        f.get("State") or "",
        f.get("Result") or "",
        f.get("Reason") or "",
        parse_time(f.get("CreationTimeUTC")),
        parse_time(f.get("EndTimeUTC")),
        _size(f.get("TotalSize")),
    )


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
            sessions += _json_sessions(items)
    paging = _lower(top.get("paginginfo"))
    page = _page(paging.get("pagenum"), paging.get("pagesize"), paging.get("pagescount"))
    return sessions, page


_ITEM_KEYS = (
    "uid",
    "type",
    "name",
    "vmdisplayname",
    "jobsessionuid",
    "state",
    "result",
    "reason",
    "creationtimeutc",
    "endtimeutc",
    "totalsize",
    "links",
)
_LINK_KEYS = ("rel", "type", "name")


class _Keys:
    """Resolves canonical lower-case keys to a page's spelling (`UID`, `uid`, ...) once, then
    reads them with one C-level itemgetter; an object spelled differently is looked up alone."""

    def __init__(self, wanted: tuple[str, ...]) -> None:
        self.wanted = wanted
        self.getter: Any = None

    def values(self, obj: Any) -> tuple[Any, ...]:
        getter = self.getter
        if getter is not None:
            try:
                return getter(obj)  # type: ignore[no-any-return]
            except (KeyError, TypeError):
                pass
        if not isinstance(obj, dict):
            raise ParseError("EM sent a session or link that is not an object")
        lowered = {str(k).lower(): k for k in obj}
        if all(w in lowered for w in self.wanted):
            self.getter = itemgetter(*(lowered[w] for w in self.wanted))
        return tuple(obj.get(lowered.get(w, ""), None) for w in self.wanted)


def _json_sessions(items: list[Any]) -> list[TaskSession]:
    item_values, link_values = _Keys(_ITEM_KEYS).values, _Keys(_LINK_KEYS).values
    out: list[TaskSession] = []
    append = out.append
    for item in items:
        uid, typ, name, vm, jsu, state, result, reason, created, ended, size, links = item_values(
            item
        )
        job = server = ""
        for link in links or ():
            rel, ltype, lname = link_values(link)
            if rel == "Up" and lname:
                if ltype == "BackupServerReference":
                    server = lname
                elif ltype and ltype.endswith("JobSessionReference"):
                    job = job_name(lname)
                if job and server:
                    break
        try:  # the common case inline: strings ending in Z parse straight to UTC
            c = _fromiso(created) if created else None
            e = _fromiso(ended) if ended else None
        except (ValueError, TypeError):
            c, e = parse_time(created), parse_time(ended)  # raises the clear error
        if c is not None and c.tzinfo is not UTC:
            c = parse_time(created)
        if e is not None and e.tzinfo is not UTC:
            e = parse_time(ended)
        append(
            TaskSession(
                uid or "",
                typ or "",
                name or "",
                vm or "",
                job,
                jsu or "",
                server,
                state or "",
                result or "",
                reason or "",
                c,
                e,
                size if type(size) is int else _size(size),
            )
        )
    return out
