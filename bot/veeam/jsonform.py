"""EM's JSON answers: v12 PascalCase and v13 camelCase, keys matched case-insensitively
(resolved once per page)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any

from bot.errors import EMRejected, ParseError
from bot.models import Page, TaskSession
from bot.veeam.fields import PLURALS, job_name, new_session, page_info, size_of, times


def lower(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        return {}
    return {str(k).lower(): v for k, v in obj.items()}


def decode(data: bytes) -> dict[str, Any]:
    """A JSON answer's top level, keys lower-cased ({} for anything but an object)."""
    try:
        return lower(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"EM sent malformed JSON: {exc}") from exc


def query_result(data: bytes, top: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON query answer's top level, keys lower-cased (`top`: already decoded); raises
    EMRejected for EM's error document and ParseError for anything else that is not a
    query result."""
    top = decode(data) if top is None else top
    if "entities" not in top and "message" in top and "statuscode" in top:
        message = top.get("message") or top.get("firstchanceexceptionmessage") or "no message"
        raise EMRejected(str(message).strip(), int(top.get("statuscode") or 0))
    if "entities" not in top and "refs" not in top:
        raise ParseError("EM sent a JSON document that is not a query result")
    return top


def parse_json(data: bytes) -> tuple[list[TaskSession], Page | None]:
    top = query_result(data)
    sessions: list[TaskSession] = []
    for key, wrapper in lower(top.get("entities")).items():
        if key in PLURALS and wrapper:
            items = lower(wrapper).get(key) or []
            if not isinstance(items, list):
                raise ParseError(f"EM sent an unexpected shape under {key!r}")
            sessions += _json_sessions(items)
    paging = lower(top.get("paginginfo"))
    page = page_info(paging.get("pagenum"), paging.get("pagesize"), paging.get("pagescount"))
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
        c, e = times(created, ended)
        append(
            new_session(
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
                    size if type(size) is int else size_of(size),
                    "",
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
