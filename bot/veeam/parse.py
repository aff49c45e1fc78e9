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
from collections.abc import Callable, Mapping
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
# A NamedTuple's own __new__ is a Python function; tuple.__new__ builds the same object directly.
_new: Callable[[type[TaskSession], tuple[Any, ...]], TaskSession] = tuple.__new__
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


def _times(created: Any, ended: Any) -> tuple[datetime | None, datetime | None]:
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
# EM writes one default namespace on the root, among other declarations and in any position
# (EM 13: `<QueryResult xmlns:xsi="…" xmlns:xsd="…" xmlns="…">`). Dropping that one
# declaration before parsing leaves every tag a plain name, which lxml hands out several times
# faster than "{ns}Name"; nothing here depends on the namespace URI.
_ROOT_TAG = re.compile(rb"\A\s*(?:<\?xml[^>]*\?>\s*)?<[A-Za-z_][\w.-]*[^>]*>")
_DEFAULT_XMLNS = re.compile(rb"""\s+xmlns\s*=\s*(?:"[^"<>]*"|'[^'<>]*')""")
# The order EM's serializer writes a task session's children in.
_FIELDS = (
    "Links",
    "JobSessionUid",
    "CreationTimeUTC",
    "EndTimeUTC",
    "State",
    "Result",
    "Reason",
    "TotalSize",
)
_KNOWN_FIELDS = frozenset(_FIELDS)


def _local(tag: Any) -> str:
    return tag[tag.rfind("}") + 1 :] if isinstance(tag, str) else ""


def _drop_default_namespace(data: bytes) -> bytes:
    """The document with its root's default `xmlns="…"` declaration removed."""
    head = _ROOT_TAG.match(data, 0, 2048)
    if head is None:
        return data
    tag = head.group()
    plain = _DEFAULT_XMLNS.sub(b"", tag, count=1)
    return data if plain == tag else plain + data[head.end() :]


def _xml_root(data: bytes) -> Any:
    data = _drop_default_namespace(data)
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
                    sessions += _xml_sessions(plural)
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


def _xml_sessions(plural: Any) -> list[TaskSession]:
    """All sessions of one `<ReplicaTaskSessions>` (or backup) element.

    The common shape is read positionally: children in EM's order, and the attributes of the
    session and of its first two links in the order the page's first session and link use
    (checked by name there; every other element must have as many). Anything else, such as a
    running session without `EndTimeUTC` or an extra link first, goes through `_xml_session`,
    which looks every field up by name. Both give the same result for the common shape."""
    out: list[TaskSession] = []
    append = out.append
    jobs: dict[str, str] = {}
    s_at = l_at = None  # positions of (Type, Name, VmDisplayName, UID) and (Rel, Type, Name)
    for s in plural:
        try:
            links, jsu, ct, et, st, rs, rn, sz, *extra = s
            if (
                links.tag,
                jsu.tag,
                ct.tag,
                et.tag,
                st.tag,
                rs.tag,
                rn.tag,
                sz.tag,
            ) != _FIELDS or (extra and not _KNOWN_FIELDS.isdisjoint([e.tag for e in extra])):
                raise ValueError
            l0, l1, *_ = links
            if s_at is None or l_at is None:
                sa, la = _layout(s.keys(), _SESSION_ATTRS), _layout(l0.keys(), _LINK_ATTRS)
                if sa is None or la is None or l1.keys() != l0.keys():
                    raise ValueError
                s_at, l_at = sa, la
            sv, v0, v1 = s.values(), l0.values(), l1.values()
            nl, ir, it, iname = l_at
            if (
                len(sv) != s_at[0]
                or len(v0) != nl
                or len(v1) != nl
                or v0[ir] != "Up"
                or v0[it] != "BackupServerReference"
                or v1[ir] != "Up"
                or not v1[it].endswith("JobSessionReference")
            ):
                raise ValueError
            _, ityp, iname_s, ivm, iuid = s_at
        except ValueError:
            append(_xml_session(s))
            continue
        job_key = v1[iname]
        job = jobs.get(job_key)
        if job is None:
            job = jobs[job_key] = job_name(job_key)
        c, e = _times(ct.text, et.text)
        size = sz.text
        append(
            _new(
                TaskSession,
                (
                    sv[iuid],
                    sv[ityp] or _local(s.tag),
                    sv[iname_s],
                    sv[ivm],
                    job,
                    jsu.text or "",
                    v0[iname] or "",
                    st.text or "",
                    rs.text or "",
                    rn.text or "",
                    c,
                    e,
                    _size(size),
                    "",
                ),
            )
        )
    return out


_SESSION_ATTRS = ("Type", "Name", "VmDisplayName", "UID")
_LINK_ATTRS = ("Rel", "Type", "Name")


def _layout(keys: list[str], wanted: tuple[str, ...]) -> tuple[int, ...] | None:
    """(attribute count, position of each wanted attribute), or None when one is missing."""
    try:
        return (len(keys), *(keys.index(w) for w in wanted))
    except ValueError:
        return None


def _xml_session(el: Any) -> TaskSession:
    """One session, every field looked up by name; the first `Up` link of each kind wins."""
    f: dict[str, str | None] = {}
    job: str | None = None
    server: str | None = None
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
                    server = lname if server is None else server
                elif job is None and typ.endswith("JobSessionReference"):
                    job = job_name(lname)
    get = el.get
    return TaskSession(
        get("UID", ""),
        get("Type") or _local(el.tag),
        get("Name", ""),
        get("VmDisplayName", ""),
        job or "",
        f.get("JobSessionUid") or "",
        server or "",
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


def _unresolved(obj: Any) -> tuple[Any, ...]:
    raise KeyError("key spelling not resolved yet")


def _json_sessions(items: list[Any]) -> list[TaskSession]:
    item_keys, link_keys = _Keys(_ITEM_KEYS), _Keys(_LINK_KEYS)
    out: list[TaskSession] = []
    append = out.append
    jobs: dict[str, str] = {}
    item_get = link_get = _unresolved
    for item in items:
        try:
            row = item_get(item)
        except (KeyError, TypeError):
            row = item_keys.values(item)
            item_get = item_keys.getter or _unresolved
        uid, typ, name, vm, jsu, state, result, reason, created, ended, size, links = row
        try:  # EM's usual order: the Up server link, then the Up job-session link
            l0, l1 = links[0], links[1]
            if link_get is _unresolved:
                link_keys.values(l0)
                link_get = link_keys.getter or _unresolved
            (r0, t0, server), (r1, t1, job_key) = link_get(l0), link_get(l1)
            if not (
                r0 == r1 == "Up"
                and t0 == "BackupServerReference"
                and t1.endswith("JobSessionReference")
                and server
                and job_key
            ):
                raise ValueError
            job = jobs.get(job_key)
            if job is None:
                job = jobs[job_key] = job_name(job_key)
        except (LookupError, TypeError, ValueError, AttributeError, ParseError):
            job, server = _json_links(links, link_keys.values)
        c, e = _times(created, ended)
        append(
            _new(
                TaskSession,
                (
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
                    "",
                ),
            )
        )
    return out


def _json_links(links: Any, link_values: Callable[[Any], tuple[Any, ...]]) -> tuple[str, str]:
    """(job, server) from the first `Up` link of each kind, in any order."""
    job = server = None
    for link in links or ():
        rel, ltype, lname = link_values(link)
        if rel == "Up" and lname and isinstance(ltype, str):
            if ltype == "BackupServerReference":
                server = lname if server is None else server
            elif job is None and ltype.endswith("JobSessionReference"):
                job = job_name(lname)
    return job or "", server or ""


def parse_logon(body: bytes) -> tuple[str, str]:
    """(SessionId, Delete link) of a `LogonSession` answer, XML or JSON; empty strings for
    what it lacks. Never raises: a logon without a readable body still works, it only
    cannot be logged out of except through a `Location` header."""
    data = body.removeprefix(_BOM).lstrip()
    try:
        if data.startswith(b"<"):
            root = _xml_root(data)
            session_id, delete = "", ""
            for el in root.iter():
                name = _local(el.tag)
                if name == "SessionId" and not session_id:
                    session_id = (el.text or "").strip()
                elif name == "Link" and (el.get("Rel") or "").lower() == "delete" and not delete:
                    delete = el.get("Href") or ""
            return session_id, delete
        if data.startswith(b"{"):
            doc = _lower(json.loads(data))
            raw = doc.get("links")
            links: list[Any] = raw if isinstance(raw, list) else []
            delete = next(
                (
                    str(link.get("href") or "")
                    for link in map(_lower, links)
                    if str(link.get("rel") or "").lower() == "delete"
                ),
                "",
            )
            return str(doc.get("sessionid") or ""), delete
    except (ParseError, ValueError, TypeError, AttributeError):
        pass
    return "", ""
