"""EM's tasks (`POST /jobs/{id}?action=retry` answers one, `GET /tasks/{id}` follows it):
`TaskId`, `State` (Running, Finished), `Operation`, and once finished a `Result` with its
`Success` and `Message`. In XML (`Success` an attribute) and JSON of either casing."""

from __future__ import annotations

from typing import Any, NamedTuple

from bot.errors import EMRejected, ParseError
from bot.veeam.fields import by_form, flag_of, text_of
from bot.veeam.jsonform import decode, lower
from bot.veeam.xml import local_name, xml_root


class Task(NamedTuple):
    id: str
    state: str  # Running, Finished
    operation: str
    success: bool | None  # None until finished
    message: str

    @property
    def finished(self) -> bool:
        return self.state.lower() == "finished"


def parse_task(body: bytes) -> Task:
    """Raises EMRejected for EM's error document, ParseError for anything else."""
    return by_form(body, _from_xml, _from_json)


def _from_xml(data: bytes) -> Task:
    root = xml_root(data)
    if local_name(root.tag) == "Error":
        raise EMRejected(root.get("Message") or "EM refused the request", 0)
    if local_name(root.tag) != "Task":
        raise ParseError(f"EM sent {local_name(root.tag)} where a Task was expected")
    fields: dict[str, Any] = {}
    success: bool | None = None
    message = ""
    for child in root:
        if not isinstance(child.tag, str):
            continue
        name = local_name(child.tag)
        if name == "Result":
            success = flag_of(child.get("Success"))
            message = "".join(m.text or "" for m in child if local_name(m.tag) == "Message")
        else:
            fields[name.lower()] = child.text
    return _task(fields, success, message)


def _from_json(data: bytes) -> Task:
    top = decode(data)
    if "taskid" not in top and "message" in top:
        raise EMRejected(text_of(top.get("message")) or "EM refused the request", 0)
    result = lower(top.get("result"))
    success = flag_of(result.get("success")) if result else None
    return _task(top, success, text_of(result.get("message")))


def _task(f: dict[str, Any], success: bool | None, message: str) -> Task:
    task_id = text_of(f.get("taskid"))
    if not task_id:
        raise ParseError("EM sent a task without a TaskId")
    state = text_of(f.get("state"))
    finished = state.lower() == "finished"
    return Task(task_id, state, text_of(f.get("operation")), success if finished else None,
                message.strip())  # fmt: skip
