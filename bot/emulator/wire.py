"""How the emulator writes EM documents: XML (EM's default) and JSON (v12 Pascal or v13 camel)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote as urlquote
from xml.sax.saxutils import escape as _escape
from xml.sax.saxutils import quoteattr as _quoteattr

from bot.emulator.data import EmSession

NS = "http://www.veeam.com/ent/v1.0"
# The root's declarations as EM 13.1 writes them (Help Center, GET /query?type=...): the
# default namespace comes last.
ROOT_NAMESPACES = (
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    f'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns="{NS}"'
)
ENTITY_KEYS = (
    "Jobs",
    "FailoverPlans",
    "Backups",
    "Replicas",
    "Repositories",
    "RestorePoints",
    "VmRestorePoints",
    "VAppRestorePoints",
    "VmReplicaPoints",
    "BackupJobSessions",
    "ReplicaJobSessions",
    "ReplicaTaskSessions",
    "RestoreSessions",
    "HierarchyRoots",
    "BackupTaskSessions",
    "BackupServers",
    "ManagedServers",
    "EnterpiseRoles",
    "EnterpiseAccounts",
    "WanAccelerators",
    "CloudGateways",
    "CloudTenants",
    "CloudReplicas",
    "VCloudOrganizationConfigs",
    "BackupFiles",
    "VSphereSelfServiceConfigs",
    "CloudPublicIps",
    "CloudHardwarePlans",
    "CloudVmReplicaPoints",
    "AgentRestorePoints",
    "AgentBackupJob",
    "CloudGatewayPools",
    "CloudFailoverPlans",
    "ExternalRepositories",
    "VlanConfigurations",
    "CloudFailoverSessions",
    "AgentProtectionGroups",
    "DiscoveredComputers",
    "FileServers",
    "NASJobs",
    "CdpReplicas",
    "CdpReplicaVms",
    "CdpPolicies",
    "CdpReplicaSessions",
    "CdpReplicaTaskSessions",
    "VAppReplicaPoints",
    "VmCdpReplicas",
    "VAppCdpReplicas",
    "VAppCdpReplicaVms",
    "SystemSessions",
)
_CAMEL = re.compile(r"^[A-Z]+(?=[A-Z][a-z]|$)|^[A-Z]")


def camel(key: str) -> str:
    """.NET JsonNamingPolicy.CamelCase: UID→uid, NASJobs→nasJobs, VAppX→vAppX."""
    return _CAMEL.sub(lambda m: m.group(0).lower(), key, count=1)


def camelize(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {camel(k): camelize(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [camelize(v) for v in obj]
    return obj


_ATTR_SPECIAL = re.compile(r'[&<>"\n\r\t]')
_TEXT_SPECIAL = re.compile(r"[&<>]")


def quoteattr(value: str) -> str:
    """saxutils.quoteattr, with a shortcut for the usual value that needs no escaping:
    a page of 1,000 sessions quotes 16,000 attributes."""
    return _quoteattr(value) if _ATTR_SPECIAL.search(value) else f'"{value}"'


def escape(value: str) -> str:
    """saxutils.escape, with the same shortcut."""
    return _escape(value) if _TEXT_SPECIAL.search(value) else value


def em_time(value: datetime) -> str:
    """EM's timestamp form: UTC, `Z`, trailing fraction zeros trimmed."""
    text = value.isoformat(timespec="seconds")[:19]  # strftime's "%Y-%m-%dT%H:%M:%S", faster
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _paths(s: EmSession) -> tuple[str, str, str]:
    """(task collection, job-session collection, job-session reference type)."""
    if s.type == "BackupTaskSession":
        return "backupTaskSessions", "backupSessions", "BackupJobSessionReference"
    return "replicaTaskSessions", "replicaSessions", "ReplicaJobSessionReference"


def _links(s: EmSession, base: str) -> list[tuple[str, str, str, str]]:
    tasks, jobs, js_type = _paths(s)
    return [
        ("Up", "BackupServerReference", f"{base}/api/backupServers/{_g(s.server_uid)}", s.server),
        ("Up", js_type, f"{base}/api/{jobs}/{_g(s.job_session_uid)}", s.job_session_name),
        ("Alternate", f"{s.type}Reference", f"{base}/api/{tasks}/{s.guid}", s.name),
    ]


def _g(urn: str) -> str:
    return urn.rsplit(":", 1)[-1]


# ------------------------------------------------------------------------ XML
def xml_session(s: EmSession, base: str, root: bool = False) -> str:
    tasks = _paths(s)[0]
    ns = f' xmlns="{NS}"' if root else ""
    links = "".join(
        f"<Link Rel={quoteattr(r)} Type={quoteattr(t)} Href={quoteattr(h)} Name={quoteattr(n)} />"
        for r, t, h, n in _links(s, base)
    )
    parts = [
        f"<{s.type}{ns} Type={quoteattr(s.type)} "
        f'Href="{base}/api/{tasks}/{s.guid}?format=Entity" Name={quoteattr(s.name)} '
        f"VmDisplayName={quoteattr(s.vm)} UID={quoteattr(s.uid)}>",
        f"<Links>{links}</Links>",
        f"<JobSessionUid>{escape(s.job_session_uid)}</JobSessionUid>",
        f"<CreationTimeUTC>{em_time(s.created)}</CreationTimeUTC>",
    ]
    if s.ended is not None:
        parts.append(f"<EndTimeUTC>{em_time(s.ended)}</EndTimeUTC>")
    parts.append(f"<State>{s.state}</State><Result>{s.result}</Result>")
    parts.append(f"<Reason>{escape(s.reason)}</Reason>" if s.reason else "<Reason />")
    parts.append(f"<TotalSize>{s.total_size}</TotalSize>")
    if s.type == "BackupTaskSession":
        parts.append(f"<VmUid>{escape(s.vm_uid)}</VmUid>")
    parts.append(f"</{s.type}>")
    return "".join(parts)


_XML_MEMO: dict[tuple[Any, ...], str] = {}  # session fields → its XML (at most 20,000)


def _cached_xml(s: EmSession, base: str) -> str:
    """A session's XML in a query page. Completed sessions do not change, and a poll that
    sweeps a day asks for the same thousands every time: the text is kept, keyed by every
    field, so a session changed in place is written anew."""
    key = (
        base, s.uid, s.type, s.name, s.vm, s.vm_uid, s.job_session_uid, s.job_session_name,
        s.server, s.server_uid, s.state, s.result, s.reason, s.created, s.ended, s.total_size,
    )  # fmt: skip
    text = _XML_MEMO.get(key)
    if text is None:
        if len(_XML_MEMO) >= 20_000:
            _XML_MEMO.clear()
        text = _XML_MEMO[key] = xml_session(s, base)
    return text


def xml_query(items: list[EmSession], type_name: str, base: str, paging: dict[str, Any]) -> str:
    body = "\n".join(_cached_xml(s, base) for s in items)
    links = "".join(
        f"<Link Rel={quoteattr(rel)} Href={quoteattr(href)} />" for rel, href in paging["links"]
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"<QueryResult {ROOT_NAMESPACES}>\n<Entities>\n<{type_name}s>\n{body}\n</{type_name}s>\n"
        f'</Entities>\n<PagingInfo PagesCount="{paging["count"]}" PageSize="{paging["size"]}" '
        f'PageNum="{paging["num"]}">\n<Links>{links}</Links>\n</PagingInfo>\n</QueryResult>\n'
    )


def xml_error(message: str, status: int) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f"<Error Message={quoteattr(message)} StatusCode={quoteattr(str(status))} "
        f'xmlns="{NS}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        f"<FirstChanceExceptionMessage>{escape(message)}</FirstChanceExceptionMessage>\n</Error>\n"
    )


def xml_logon(base: str, session_id: str, user: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<LogonSession xmlns="{NS}" Type="LogonSession" '
        f'Href="{base}/api/logonSessions/{session_id}">'
        f'<Links><Link Rel="Up" Type="EnterpriseManager" Href="{base}/api/" />'
        f'<Link Rel="Down" Type="QueryService" Href="{base}/api/querySvc" />'
        f'<Link Rel="Delete" Href="{base}/api/logonSessions/{session_id}" /></Links>'
        f"<UserName>{escape(user)}</UserName><SessionId>{session_id}</SessionId></LogonSession>\n"
    )


# ----------------------------------------------------------------------- JSON
def json_session(s: EmSession, base: str) -> dict[str, Any]:
    tasks = _paths(s)[0]
    item: dict[str, Any] = {
        "JobSessionUid": s.job_session_uid,
        "CreationTimeUTC": em_time(s.created),
        "EndTimeUTC": em_time(s.ended) if s.ended else None,
        "State": s.state,
        "Result": s.result,
        "Reason": s.reason,
        "TotalSize": s.total_size,
    }
    if s.type == "BackupTaskSession":
        item["VmUid"] = s.vm_uid
    item.update(
        VmDisplayName=s.vm,
        Name=s.name,
        UID=s.uid,
        Links=[{"Rel": r, "Href": h, "Name": n, "Type": t} for r, t, h, n in _links(s, base)],
        Href=f"{base}/api/{tasks}/{s.guid}?format=Entity",
        Type=s.type,
    )
    return item


def json_entities(
    items: list[Any], plural: str, write: Callable[[Any, str], dict[str, Any]], base: str,
    paging: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """A query answer in JSON (v12 casing; the server camel-cases it for v13)."""
    entities: dict[str, Any] = dict.fromkeys(ENTITY_KEYS)
    entities[plural] = {plural: [write(x, base) for x in items]}
    return {
        "Refs": None,
        "Entities": entities,
        "Resources": None,
        "Links": None,
        "PagingInfo": {
            "Links": [
                {"Rel": r, "Href": h, "Name": None, "Type": None} for r, h in paging["links"]
            ],
            "PageNum": paging["num"],
            "PageSize": paging["size"],
            "PagesCount": paging["count"],
        },
    }


def json_query(
    items: list[EmSession], type_name: str, base: str, paging: dict[str, Any]
) -> dict[str, Any]:
    return json_entities(items, f"{type_name}s", json_session, base, paging)


def json_error(message: str, status: int) -> dict[str, Any]:
    return {
        "FirstChanceExceptionMessage": message,
        "Message": message,
        "StackTrace": None,
        "Status": None,
        "StatusCode": status,
    }


def json_logon(base: str, session_id: str, user: str) -> dict[str, Any]:
    href = f"{base}/api/logonSessions/{session_id}"
    return {
        "UserName": user,
        "SessionId": session_id,
        "Links": [
            {"Rel": "Up", "Href": f"{base}/api/", "Name": None, "Type": "EnterpriseManager"},
            {"Rel": "Delete", "Href": href, "Name": None, "Type": None},
        ],
        "Href": href,
        "Type": "LogonSession",
    }


def dump_json(doc: Any, *, camel_case: bool) -> str:
    return json.dumps(camelize(doc) if camel_case else doc, ensure_ascii=False)


def paging_links(base: str, params: dict[str, str], num: int, count: int) -> list[tuple[str, str]]:
    """EM re-encodes the query in its links (here: percent-encoded, like v12)."""

    def href(page: int) -> str:
        rest = "&".join(f"{k}={urlquote(v, safe='')}" for k, v in params.items())
        return f"{base}/api/query?{rest}&page={page}"

    links = [("First", href(1))]
    if num > 1:
        links.append(("Previous", href(num - 1)))
    if num < count:
        links.append(("Next", href(num + 1)))
    links.append(("Last", href(max(count, 1))))
    return links
