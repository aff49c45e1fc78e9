"""`/veeam routes [job:NAME] [vm:NAME] [em:NAME] [type:backup|replica] [result:Failed|Warning]`:
the route table, in order, and with words, where such an alert would go (no request to EM)."""

from __future__ import annotations

from bot.alerts.routes import Router
from bot.config.render import section, slack_escape
from bot.config.settings import Route, Settings
from bot.errors import QueryError
from bot.slash.answers import Reply

USAGE = (
    "usage: /veeam routes [job:NAME] [vm:NAME] [em:NAME] [type:backup|replica] "
    "[result:Failed|Warning]"
)
WORDS = ("job", "vm", "em", "type", "result")


def parse_route_words(words: list[str]) -> dict[str, str]:
    """name → value of the words after `routes` (quotes kept out). Raises QueryError."""
    out: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition(":")
        if not sep or name.lower() not in WORDS or not value or name.lower() in out:
            raise QueryError(f"{word!r} is not understood here; {USAGE}")
        out[name.lower()] = value.strip('"')
    kind = out.get("type", "backup").lower()
    if kind not in ("backup", "replica"):
        raise QueryError(f"type:{out['type']} is not backup or replica; {USAGE}")
    result = out.get("result", "Failed").capitalize()
    if result not in ("Failed", "Warning"):
        raise QueryError(f"result:{out['result']} is not Failed or Warning; {USAGE}")
    out["type"], out["result"] = kind, result
    return out


def _line(n: int, r: Route) -> str:
    what = [
        f"{name} {', '.join(slack_escape(v) for v in values)}"
        for name, values in (("jobs", r.jobs), ("VMs", r.vms), ("servers", r.servers),
                             ("types", r.types), ("results", r.results))
        if values
    ]  # fmt: skip
    flags = " · continue" if r.cont else ""
    return f"{n}. {slack_escape(r.channel)} ← {' · '.join(what) or 'everything'}{flags}"


def routes_reply(settings: Settings, words: dict[str, str]) -> Reply:
    table = settings.alerts.routes
    default = settings.alerts.channel
    lines = [_line(n, r) for n, r in enumerate(table, 1)]
    lines.append(f"then: {slack_escape(default)} ← what no route takes")
    text = "*Routes*, tried in order (the first that matches takes an alert):\n" + "\n".join(lines)
    if words:
        router = Router(table, default)
        goes = router.channels_of(words.get("job", ""), words.get("vm", ""),
                                  words.get("em", ""), words["type"], words["result"])  # fmt: skip
        asked = " ".join(f"{k}:{slack_escape(v)}" for k, v in words.items())
        text += f"\n*{asked}* would go to {', '.join(slack_escape(c) for c in goes)}"
        if len(goes) > 1:
            text += f" (its problem's thread in {slack_escape(goes[0])})"
    return Reply(text, [section(text[:3000])])
