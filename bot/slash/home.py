"""The App Home tab: for the user who opens it, each Enterprise Manager with its last good
poll and whether it is down, the open problems (longest open first, each linking to its
alert), the jobs that stopped running, the active mutes with an *Unmute* button, the
maintenance window in force and when the digest is posted next. A *Refresh* button
publishes it again.

Built from the state file alone, never from EM: it appears at once however slow EM is.
`home_view` is pure (data and `now` in, a `views.publish` view out); `Home` gathers the data
and publishes, caching each alert's permalink (`chat.getPermalink`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.alerts.joblist import JobRow, job_rows, row_text
from bot.alerts.mutes import Mute, MuteBook
from bot.alerts.problems import Problem, identity_fields
from bot.alerts.windows import active
from bot.config.render import context, header, human_duration, section, slack_date, slack_escape
from bot.config.settings import Settings, Window
from bot.models import utc_from_epoch
from bot.slack.codes import TRANSPORT_ERRORS
from bot.slash.commands import Respond, SlashDeps, unmute_reply
from bot.store.codec import scoped
from bot.store.schema import JOBS, PROBLEMS
from bot.store.store import Store

log = logging.getLogger(__name__)
REFRESH, UNMUTE = "veeam_home_refresh", "veeam_unmute"
MOST_PROBLEMS, MOST_JOBS, MOST_MUTES = 25, 15, 15


@dataclass(frozen=True)
class ServerLine:
    name: str
    ok_at: datetime | None  # the last poll that reached EM and Slack
    down_since: datetime | None
    error: str


def home_view(
    *,
    servers: list[ServerLine],
    problems: list[tuple[Problem, str]],  # (problem, its alert's permalink or "")
    jobs: list[JobRow],
    mutes: list[Mute],
    windows: list[tuple[Window, datetime]],
    next_digest: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """The Home tab (at most 100 blocks), every name from EM escaped."""
    blocks: list[dict[str, Any]] = [
        header("Veeam backups"),
        {
            "type": "actions",
            "block_id": "veeam_home",
            "elements": [_button("Refresh", REFRESH, "refresh")],
        },
    ]
    rows = []
    for s in servers:
        name = slack_escape(s.name or "Enterprise Manager")
        if s.down_since is not None:
            rows.append(f":red_circle: *{name}* unreachable since {slack_date(s.down_since)}: "
                        f"{slack_escape(s.error)}")  # fmt: skip
        elif s.ok_at is None:
            rows.append(f":white_circle: *{name}*: no good poll yet")
        else:
            rows.append(f":large_green_circle: *{name}*: last good poll {slack_date(s.ok_at)}")
    blocks.append(section("\n".join(rows)))
    blocks.append(section(f"*Open problems: {len(problems)}* (longest open first)"))
    lines = []
    for p, link in problems[:MOST_PROBLEMS]:
        _em, _type, job, vm = identity_fields(p.id)
        what = f"*{slack_escape(vm)}* ({slack_escape(job)})" if vm else f"*{slack_escape(job)}*"
        opened = human_duration(now.timestamp() - p.opened)
        times = f" · {p.count} failures" if p.count > 1 else ""
        line = f"• {what} · {p.worst} · open {opened}{times}"
        lines.append(f"{line} · <{link}|alert>" if link else line)
    if len(problems) > MOST_PROBLEMS:
        lines.append(f"_and {len(problems) - MOST_PROBLEMS} more_")
    if lines:
        blocks.append(section("\n".join(lines)))
    if jobs:
        text = [row_text(j, now) for j in jobs[:MOST_JOBS]]
        if len(jobs) > MOST_JOBS:
            text.append(f"_and {len(jobs) - MOST_JOBS} more: /veeam jobs_")
        blocks.append(section("*Not running*\n" + "\n".join(text)))
    for w, end in windows[:3]:
        blocks.append(context(f":wrench: Maintenance window *{slack_escape(w.name)}* in force "
                              f"until {slack_date(end)}: failures are held"))  # fmt: skip
    blocks.append(section(f"*Active mutes: {len(mutes)}*"))
    for m in mutes[:MOST_MUTES]:
        blocks.append({
            "type": "section",
            "text": {"type": "mrkdwn", "text": slack_escape(f"{m.kind} {m.line()}")[:3000],
                     "verbatim": True},
            "accessory": _button("Unmute", UNMUTE, m.id),
        })  # fmt: skip
    if next_digest is not None:
        blocks.append(context(f"Next digest {slack_date(next_digest)} · updated {slack_date(now)}"))
    return {"type": "home", "blocks": blocks[:100]}


def _button(label: str, action: str, value: str) -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": label},
            "action_id": action, "value": value[:2000]}  # fmt: skip


def next_digest(settings: Settings, now: datetime) -> datetime | None:
    """When the digest is posted next (its local time, in its zone); None when it is off."""
    d = settings.digest
    if not d.enabled:
        return None
    zone = ZoneInfo(d.timezone)
    local = now.astimezone(zone)
    when = datetime.combine(local.date(), d.at, tzinfo=zone)
    if when <= local:
        when = datetime.combine(local.date() + timedelta(days=1), d.at, tzinfo=zone)
    return when.astimezone(now.tzinfo)


class Home:
    """Publishes the Home tab from the state file."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store
        self._links: dict[str, str] = {}  # alert ts → permalink
        self._lock = threading.Lock()

    def view(self, client: WebClient, now: datetime) -> dict[str, Any]:
        servers = []
        for s in self.settings.servers:
            last = self.store.meta(scoped("last_poll", s.server)) or {}
            state = self.store.meta(scoped("source", s.server)) or {}
            down = (
                state.get("since") if isinstance(state, dict) and not state.get("back_at") else None
            )
            ok_at = last.get("ok_at") if isinstance(last, dict) else None
            servers.append(ServerLine(
                s.label, utc_from_epoch(ok_at) if ok_at else None,
                utc_from_epoch(down) if down else None, str(state.get("error", "")) if down else "",
            ))  # fmt: skip
        problems = [Problem.from_json(v) for v in self.store.all_records(PROBLEMS).values()]
        opened = sorted((p for p in problems if p.is_open), key=lambda p: p.opened)
        linked = [(p, self._link(client, p)) for p in opened[:MOST_PROBLEMS]]
        linked += [(p, "") for p in opened[MOST_PROBLEMS:]]
        jobs: list[JobRow] = []
        if self.settings.jobs.refresh > timedelta(0):
            shown = {s.label: s.server for s in self.settings.servers}
            rows = job_rows(self.store.all_records(JOBS), self.settings, now, shown)
            jobs = [r for r in rows if {"running", "stale", "disabled"} & set(r.marks)]
        return home_view(
            servers=servers, problems=linked, jobs=jobs, mutes=MuteBook(self.store).active(now),
            windows=active(self.settings.mutes.windows, now),
            next_digest=next_digest(self.settings, now), now=now,
        )  # fmt: skip

    def publish(self, client: WebClient, user: str, now: datetime) -> None:
        try:
            client.views_publish(user_id=user, view=self.view(client, now))
        except (SlackApiError, *TRANSPORT_ERRORS) as exc:
            log.warning("cannot publish the Home tab for %s: %s", user, exc)

    def _link(self, client: WebClient, p: Problem) -> str:
        """The permalink of a problem's alert, asked of Slack once."""
        if not p.ts or not p.channel:
            return ""
        with self._lock:
            if p.ts in self._links:
                return self._links[p.ts]
        try:
            link = str(client.chat_getPermalink(channel=p.channel, message_ts=p.ts)["permalink"])
        except (SlackApiError, *TRANSPORT_ERRORS, KeyError):
            link = ""  # a deleted alert: no link, asked again next time
        if link:
            with self._lock:
                if len(self._links) > 5000:
                    self._links.clear()
                self._links[p.ts] = link
        return link


def register_home(app: App, deps: SlashDeps) -> Home:
    """The Home tab's event and its two buttons, on the Bolt app (HTTP or Socket Mode)."""
    home = Home(deps.settings, deps.store)

    def opened(event: dict[str, Any], client: WebClient) -> None:
        if event.get("tab", "home") == "home" and event.get("user"):
            home.publish(client, str(event["user"]), deps.clock())

    def refresh(ack: Callable[..., None], body: dict[str, Any], client: WebClient) -> None:
        ack()
        home.publish(client, str((body.get("user") or {}).get("id", "")), deps.clock())

    def unmute(
        ack: Callable[..., None], body: dict[str, Any], client: WebClient, respond: Respond
    ) -> None:
        ack()
        user = str((body.get("user") or {}).get("id", ""))
        wanted = deps.settings.slash.allowed_users
        if not wanted or user in wanted:  # the Home tab has no channel to check
            mute_id = str(((body.get("actions") or [{}])[0]).get("value", ""))
            unmute_reply(deps, mute_id, user)  # said in the alert channel, as /veeam unmute
        home.publish(client, user, deps.clock())

    app.event("app_home_opened")(opened)
    app.action(REFRESH)(refresh)
    app.action(UNMUTE)(unmute)
    return home
