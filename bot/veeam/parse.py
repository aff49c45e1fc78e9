"""Parse EM `/api/query` answers (XML or JSON, v12 PascalCase or v13 camelCase).

XML goes through lxml with entity expansion, DTD loading and network access off; a document
that carries a DTD is refused. JSON keys are matched
case-insensitively (resolved once per page), a UTF-8 BOM is tolerated, timestamps may have
any fraction length and `EndTimeUTC` may be missing.
"""

from __future__ import annotations

import json
from typing import Any

from bot.errors import ParseError
from bot.models import Page, TaskSession
from bot.veeam.fields import BOM, by_form
from bot.veeam.jsonform import lower, parse_json
from bot.veeam.xml import local_name, parse_xml, xml_root


def parse_page(body: bytes) -> tuple[list[TaskSession], Page | None]:
    """Parse one query answer; raises EMRejected for an `Error` body, ParseError otherwise."""
    return by_form(body, parse_xml, parse_json)


def parse_logon(body: bytes) -> tuple[str, str]:
    """(SessionId, Delete link) of a `LogonSession` answer, XML or JSON; empty strings for
    what it lacks. Never raises: a logon without a readable body still works, it only
    cannot be logged out of except through a `Location` header."""
    data = body.removeprefix(BOM).lstrip()
    try:
        if data.startswith(b"<"):
            root = xml_root(data)
            session_id, delete = "", ""
            for el in root.iter():
                name = local_name(el.tag)
                if name == "SessionId" and not session_id:
                    session_id = (el.text or "").strip()
                elif name == "Link" and (el.get("Rel") or "").lower() == "delete" and not delete:
                    delete = el.get("Href") or ""
            return session_id, delete
        if data.startswith(b"{"):
            doc = lower(json.loads(data))
            raw = doc.get("links")
            links: list[Any] = raw if isinstance(raw, list) else []
            delete = next(
                (
                    str(link.get("href") or "")
                    for link in map(lower, links)
                    if str(link.get("rel") or "").lower() == "delete"
                ),
                "",
            )
            return str(doc.get("sessionid") or ""), delete
    except (ParseError, ValueError, TypeError, AttributeError):
        pass
    return "", ""
