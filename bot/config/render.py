"""Slack rendering: Jinja renders mrkdwn strings from flat views; Python builds Block Kit.

Everything from EM is escaped (`& < >`) by the environment's `finalize`; values that Python
builds as Slack markup (dates) are `Markup` and pass through untouched. `.txt.j2` templates
feed plain_text fields and are not escaped. Slack's limits are enforced here.
"""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from bot.config import resources
from bot.errors import ConfigError
from bot.models import TYPE_SHORT, TaskSession

log = logging.getLogger(__name__)
MAX_BLOCKS, MAX_SECTION, MAX_HEADER, MAX_CONTEXT = 50, 3000, 150, 2000
MAX_SESSIONS_PER_MESSAGE = 40
# Slack refuses a message whose texts add up to about 13,000 characters (msg_blocks_too_long;
# reports put the limit between 13,172 and 13,297, far below the documented caps), counting
# the blocks inside attachments too. Every alert keeps all its texts under this.
TEXT_BUDGET = 12000
REASON_EXCERPT = 300  # characters of each VM's Reason in a group message (its first line)
EMOJI = {
    "Failed": ":red_circle:",
    "Warning": ":large_yellow_circle:",
    "Success": ":large_green_circle:",
}
COLOUR = {"Failed": "#E01E5A", "Warning": "#ECB22E", "Success": "#2EB67D"}
ALERT_EVENT = "veeam_session_alert"
_PLACEHOLDER = Markup(f"\x00reason-{uuid.uuid4().hex}\x00")


def mention(user: str, unknown: str = "someone") -> Markup:
    """A mention of a Slack user ID; only IDs, never text, become mentions."""
    return Markup(f"<@{user}>") if re.fullmatch(r"[UW][A-Z0-9]{2,}", user) else Markup(unknown)


def slack_escape(text: str) -> str:
    """Escape the three characters Slack treats as control characters, and only those."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, Markup):
        return value
    return slack_escape(str(value))


def slack_date(value: datetime | None) -> Markup:
    """`<!date^…>` so readers see their own time zone; UTC text as the fallback."""
    if value is None:
        return Markup("—")
    epoch = int(value.timestamp())
    fallback = value.isoformat(" ", "minutes")[:16] + " UTC"  # strftime is several times slower
    return Markup(f"<!date^{epoch}^{{date_short_pretty}} {{time}}|{fallback}>")


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def rough_duration(seconds: float) -> str:
    """A duration to the unit that matters: "40 min", "3 h", "2 d 5 h"."""
    minutes = max(1, round(seconds / 60))
    if minutes < 120:
        return f"{minutes} min"
    hours = round(minutes / 60)
    if hours < 48:
        return f"{hours} h"
    return f"{hours // 24} d {hours % 24} h" if hours % 24 else f"{hours // 24} d"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def fit(raw: str, budget: int) -> Markup:
    """Escape `raw` and cut it to `budget` characters with a visible truncation note."""
    escaped = slack_escape(raw)
    if len(escaped) <= budget:
        return Markup(escaped)
    suffix = f"… (truncated, {len(raw)} chars)"
    room = max(0, budget - len(suffix))
    cut = raw[:room]
    escaped = slack_escape(cut)
    while len(escaped) > room:
        cut = cut[: len(cut) - (len(escaped) - room)]
        escaped = slack_escape(cut)
    return Markup(escaped + suffix)


def cut_plain(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cut_markup(text: str, limit: int) -> str:
    """Last-resort cut of finished mrkdwn that never splits an entity or a `<…>` token."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    for opener, closer in (("&", ";"), ("<", ">")):
        i = cut.rfind(opener)
        if i >= 0 and cut.find(closer, i) < 0:
            cut = cut[:i]
    return cut + "…"


def _packaged_source(name: str) -> tuple[str, str, Callable[[], bool]] | None:
    """A packaged template's source, read through importlib.resources (works installed)."""
    item = resources.templates() / name
    if not item.is_file():
        return None
    return item.read_text(encoding="utf-8"), str(item), lambda: True


def _environments(loader: jinja2.BaseLoader) -> tuple[jinja2.Environment, jinja2.Environment]:
    """(mrkdwn, plain text) environments: mrkdwn escapes every value from EM for Slack."""
    common: dict[str, Any] = {
        "loader": loader,
        "undefined": jinja2.StrictUndefined,
        "keep_trailing_newline": False,
        "autoescape": False,
        "auto_reload": False,
    }
    md = jinja2.Environment(finalize=_finalize, **common)  # noqa: S701 - Slack escaping
    txt = jinja2.Environment(**common)  # noqa: S701 - plain_text is shown literally
    return md, txt


def _plain_globals(template: jinja2.Template) -> jinja2.Template:
    # Jinja keeps a template's globals as a ChainMap and walks it twice per render; a
    # plain copy (the globals never change here) makes short renders about 40 % cheaper.
    template.globals = dict(template.globals)
    return template


def template_problem(name: str, template: jinja2.Template, exc: Exception) -> str:
    """One line naming the template file, the line in it and what went wrong."""
    filename = template.filename or name
    lineno = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == filename:
            lineno = line
    where = f", line {lineno}" if lineno else ""
    message = exc.message if isinstance(exc, jinja2.TemplateError) and exc.message else exc
    return f"template {filename}{where}: {type(exc).__name__}: {message}"


class Renderer:
    """Loads templates (user folder first, then the packaged ones) and renders strings."""

    def __init__(self, user_dir: str = "") -> None:
        packaged = jinja2.FunctionLoader(_packaged_source)
        user = [jinja2.FileSystemLoader(user_dir)] if user_dir else []
        self._md, self._txt = _environments(jinja2.ChoiceLoader([*user, packaged]))
        self._pkg_md, self._pkg_txt = _environments(packaged)
        self.overridden = frozenset(
            p.name for p in Path(user_dir).glob("*.j2") if user_dir and p.is_file()
        )
        # In strict mode (the start-up check) a failing override raises instead of falling
        # back to the packaged template.
        self.strict = False
        self._templates: dict[str, jinja2.Template] = {}
        self._packaged: dict[str, jinja2.Template] = {}
        self._reported: set[tuple[str, str]] = set()
        # Every template the bot uses (alerts, digest, /veeam) is compiled now, so a broken
        # override fails at start-up, not at 3 a.m. when it is first needed.
        self._check(resources.template_names())

    def _check(self, names: tuple[str, ...]) -> None:
        problems = []
        for name in names:
            try:
                self._load(name)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(
                    f"template {exc.filename or name}, line {exc.lineno}: {exc.message}"
                )
            except jinja2.TemplateNotFound:
                problems.append(f"template {name}: not found")
        if problems:
            raise ConfigError(problems)

    def text(self, name: str, view: Mapping[str, Any]) -> str:
        """Render a template. An override that fails on this data (an undefined name, a
        filter on an empty value) is reported once and the packaged template renders this
        message instead: a template never holds an alert back."""
        template = self._templates.get(name) or self._load(name)
        try:
            return template.render(view).strip()
        except Exception as exc:
            problem = template_problem(name, template, exc)
            if self.strict or name not in self.overridden:
                raise ConfigError([problem]) from exc
            subject = str(view.get("uid") or view.get("job_session_uid") or "-")
            if (problem, subject) not in self._reported:
                self._reported.add((problem, subject))
                log.error(
                    "%s (session %s); this message uses the packaged %s instead",
                    problem,
                    subject,
                    name,
                )
            return self._packaged_template(name).render(view).strip()

    def _load(self, name: str) -> jinja2.Template:
        env = self._txt if name.endswith(".txt.j2") else self._md
        self._templates[name] = template = _plain_globals(env.get_template(name))
        return template

    def _packaged_template(self, name: str) -> jinja2.Template:
        template = self._packaged.get(name)
        if template is None:
            env = self._pkg_txt if name.endswith(".txt.j2") else self._pkg_md
            self._packaged[name] = template = _plain_globals(env.get_template(name))
        return template

    def fitted(
        self, name: str, view: Mapping[str, Any], raw: str, limit: int, cap: int | None = None
    ) -> str:
        """Render once with a unique placeholder for `reason`, then put the reason in, cut so
        that the whole text fits in `limit` characters (and the reason in `cap`)."""
        text = self.text(name, {**view, "reason": _PLACEHOLDER})
        if _PLACEHOLDER not in text:  # a user template that does not show the reason
            return cut_markup(text, limit)
        budget = limit - (len(text) - len(_PLACEHOLDER) * text.count(_PLACEHOLDER))
        budget = budget if cap is None else min(cap, budget)
        return cut_markup(text.replace(_PLACEHOLDER, fit(raw, max(0, budget))), limit)


@dataclass
class Message:
    """One chat.postMessage payload plus the sessions it announces."""

    text: str
    blocks: list[dict[str, Any]]
    attachments: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    sessions: list[TaskSession] = field(default_factory=list)
    thread_ts: str = ""  # a reply in this thread
    broadcast: bool = False  # a reply also shown in the channel

    def all_blocks(self) -> list[dict[str, Any]]:
        out = list(self.blocks)
        for att in self.attachments:
            out += att.get("blocks", [])
        return out


def mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object. `verbatim` keeps Slack from turning bare `@here`, `#name` or URLs
    in VM names and Reasons into mentions or links; explicit markup the bot builds (dates)
    still renders."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": mrkdwn(cut_markup(text, MAX_SECTION))}


def header(text: str) -> dict[str, Any]:
    plain = cut_plain(text, MAX_HEADER)
    return {"type": "header", "text": {"type": "plain_text", "text": plain, "emoji": True}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [mrkdwn(cut_markup(text, MAX_CONTEXT))]}


def texts_of(obj: Any) -> list[str]:
    """Every `text` and `fallback` string in a block, an attachment or a list of them."""
    if isinstance(obj, list):
        return [t for item in obj for t in texts_of(item)]
    if not isinstance(obj, dict):
        return []
    out = [v for k, v in obj.items() if k in ("text", "fallback") and isinstance(v, str)]
    for v in obj.values():
        if isinstance(v, dict | list):
            out += texts_of(v)
    return out


EMOJI_MARKUP = {result: Markup(emoji) for result, emoji in EMOJI.items()}
NO_EMOJI = Markup(":grey_question:")
_TYPE_LABEL = {name: short.capitalize() for name, short in TYPE_SHORT.items()}


def session_view(s: TaskSession) -> dict[str, Any]:
    view = {
        "uid": s.uid,
        "job_session_uid": s.job_session_uid,
        "vm": s.vm,
        "job": s.job,
        "server": s.server,
        "em": s.em,  # the Enterprise Manager's name when the bot watches several, else ""
        "result": s.result,
        "state": s.state,
        "emoji": EMOJI_MARKUP.get(s.result, NO_EMOJI),
        "type_label": _TYPE_LABEL.get(s.type) or s.type.capitalize(),
        "started": slack_date(s.created),
        "ended": slack_date(s.ended),
        "duration": human_duration(s.duration_s),
        "size": human_size(s.total_size),
        "reason": s.reason or "(no reason given)",
        # a job session's own failure (no VM): what the headline names instead of a VM
        "job_level": s.job_level,
        "kind": s.kind_words if s.job_level else "",
        "subject": f"{s.job} ({s.kind_words})" if s.job_level else s.vm,
    }
    if s.job_level:
        view["type_label"] = s.kind_words.capitalize()
        if not s.reason.strip():
            view["reason"] = Markup(
                f"EM gave no reason; `/veeam session {slack_escape(s.uid)}` shows the run"
            )
    return view
