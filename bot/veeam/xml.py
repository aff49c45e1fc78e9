"""EM's XML answers, through lxml with entity expansion, DTD loading and network access off;
a document that carries a DTD is refused."""

from __future__ import annotations

import re
import threading
from typing import Any

from lxml import etree

from bot.errors import EMRejected, ParseError
from bot.models import Page, TaskSession
from bot.veeam.fields import PLURALS, job_name, new_session, page_info, parse_time, size_of, times

_BARE_AMP = re.compile(rb"&(?!(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);)")
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


def local_name(tag: Any) -> str:
    return tag[tag.rfind("}") + 1 :] if isinstance(tag, str) else ""


def _drop_default_namespace(data: bytes) -> bytes:
    """The document with its root's default `xmlns="…"` declaration removed."""
    head = _ROOT_TAG.match(data, 0, 2048)
    if head is None:
        return data
    tag = head.group()
    plain = _DEFAULT_XMLNS.sub(b"", tag, count=1)
    return data if plain == tag else plain + data[head.end() :]


def xml_root(data: bytes) -> Any:
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


def query_root(data: bytes, root: Any = None) -> Any:
    """An XML query answer's root element (`root`: already parsed); raises EMRejected for
    EM's error document and ParseError for anything that is not a query result."""
    root = xml_root(data) if root is None else root
    name = local_name(root.tag)
    if name == "Error":
        raise EMRejected(_xml_error(root), int(root.get("StatusCode") or 0))
    if name != "QueryResult":
        raise ParseError(f"EM sent an unexpected XML document <{name}>")
    return root


def parse_xml(data: bytes) -> tuple[list[TaskSession], Page | None]:
    root = query_root(data)
    sessions: list[TaskSession] = []
    page = None
    for child in root:
        local = local_name(child.tag)
        if local == "Entities":
            for plural in child:
                if local_name(plural.tag).lower() in PLURALS:
                    sessions += _xml_sessions(plural)
        elif local == "PagingInfo":
            page = page_info(child.get("PageNum"), child.get("PageSize"), child.get("PagesCount"))
    return sessions, page


def _xml_error(root: Any) -> str:
    message = root.get("Message") or ""
    if not message:
        for child in root:
            if local_name(child.tag) == "FirstChanceExceptionMessage" and child.text:
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
        c, e = times(ct.text, et.text)
        size = sz.text
        append(
            new_session(
                TaskSession,
                (
                    sv[iuid],
                    sv[ityp] or local_name(s.tag),
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
                    size_of(size),
                    "",
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
        get("Type") or local_name(el.tag),
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
        size_of(f.get("TotalSize")),
    )
