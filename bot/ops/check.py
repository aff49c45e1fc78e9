"""`python -m bot check`: the whole path from EM to Slack, one ✓/✗ line per step.

Each ✗ carries its fix in plain words. A step that needs an earlier one that failed is shown
as skipped, so that one fault gives one ✗. Nothing is posted to Slack and nothing is written
to the state store.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config.settings import Settings, VeeamSettings
from bot.errors import AuthError, BotError, EMRejected, EMUnavailable
from bot.models import JOB_SESSION_OF
from bot.slack.client import web_client
from bot.slack.codes import AUTH_ERRORS, CHANNEL_ID, TRANSPORT_ERRORS, error_code
from bot.slack.surface import app_token_problem, probe_app_token
from bot.veeam.client import EMClient

OK, FAIL, SKIP = "✓", "✗", "·"


@dataclass(frozen=True)
class Line:
    mark: str
    step: str
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{self.mark} {self.step}: {self.detail}"
        return text + (f"\n    fix: {self.fix}" if self.fix else "")


def _slack_error(exc: Exception) -> str:
    if isinstance(exc, SlackApiError):
        return error_code(exc)
    return f"cannot reach Slack ({type(exc).__name__}: {exc})"


# ------------------------------------------------------------------- Enterprise Manager
def check_em(server: VeeamSettings, settings: Settings) -> Iterator[Line]:
    """Logon, a one-row query, logout."""
    name = f"Enterprise Manager {server.label}"
    client = EMClient(server)
    try:
        try:
            client.page(server.session_types[0], "", page=1, size=1)
        except AuthError as exc:
            yield Line(
                FAIL,
                f"{name} logon",
                str(exc),
                f"check {server.credentials}; the account needs at least "
                "the Portal User role in Enterprise Manager (Configuration → Roles)",
            )
            yield Line(SKIP, f"{name} query and logout", "skipped (no logon)")
            return
        except EMUnavailable as exc:
            yield Line(
                FAIL,
                f"{name} at {server.url}",
                str(exc),
                "check the URL (EM's REST API listens on port 9398), DNS, and that a "
                "firewall lets this host reach it; try it from here with "
                f"curl -k {server.url}/api/",
            )
            yield Line(SKIP, f"{name} query and logout", "skipped (not reachable)")
            return
        except EMRejected as exc:
            yield Line(OK, f"{name} logon", f"logged on to {server.url} as {server.username}")
            yield Line(
                FAIL,
                f"{name} one-row query",
                str(exc),
                "make sure the account may read task sessions (Portal User role or higher)",
            )
            return
        except BotError as exc:  # TLS trust, an unreadable answer
            fix = (
                "set VEEAM_VERIFY_TLS (or verify_tls) to the path of the CA bundle that "
                "signed EM's certificate; do not turn verification off"
                if "certificate" in str(exc)
                else "check that the URL is Enterprise Manager's REST API (port 9398)"
            )
            yield Line(FAIL, f"{name} at {server.url}", str(exc), fix)
            yield Line(SKIP, f"{name} query and logout", "skipped")
            return
        yield Line(OK, f"{name} logon", f"logged on to {server.url} as {server.username}")
        yield Line(OK, f"{name} one-row query", f"{server.session_types[0]} answered")
        yield from _job_queries(client, name, server, settings)
        try:
            client.logout()
            yield Line(OK, f"{name} logout", "logon session ended")
        except BotError as exc:
            yield Line(
                FAIL,
                f"{name} logout",
                str(exc),
                "EM keeps the session until it times out; check EM's REST API service log",
            )
    finally:
        client.close()


def _job_queries(
    client: EMClient, name: str, server: VeeamSettings, settings: Settings
) -> Iterator[Line]:
    """One row of job sessions and of jobs, when the bot reads them."""
    asks: list[tuple[str, str, str]] = []
    if server.job_sessions:
        run = JOB_SESSION_OF[server.session_types[0]]
        asks.append((run, "job sessions", "set [veeam] job_sessions = false"))
    if settings.jobs.refresh > timedelta(0):
        asks.append(("Job", "jobs", 'set [jobs] refresh = "0m" (no stale or disabled alerts)'))
    for type_, what, off in asks:
        try:
            client.first_rows(type_)
        except BotError as exc:
            yield Line(FAIL, f"{name} {what}", str(exc),
                       f"give the account read access to {what} in EM, or {off}")  # fmt: skip
            continue
        yield Line(OK, f"{name} {what}", f"{type_} answered")


# ----------------------------------------------------------------------------- Slack
class SlackChecks:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = web_client(settings.slack.bot_token.value, settings.slack.api_url)
        self.bot = "<bot>"  # the bot user's name once auth.test told it

    def token(self) -> tuple[Line, bool]:
        if not self.settings.slack.bot_token:
            return Line(
                FAIL,
                "Slack bot token",
                "SLACK_BOT_TOKEN is not set",
                "copy the Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions "
                "page into SLACK_BOT_TOKEN",
            ), False
        try:
            resp = self.client.auth_test()
        except (SlackApiError, *TRANSPORT_ERRORS) as exc:
            error = _slack_error(exc)
            if error in AUTH_ERRORS:
                fix = (
                    "SLACK_BOT_TOKEN is wrong or revoked: copy the Bot User OAuth Token "
                    "(xoxb-…) from the app's OAuth & Permissions page (reinstall the app if "
                    "it was removed)"
                )
            else:
                fix = "check that this host can reach slack.com over HTTPS (proxy, firewall)"
            return Line(FAIL, "Slack auth.test", f"Slack rejected the bot token: {error}"
                        if error in AUTH_ERRORS else error, fix), False  # fmt: skip
        self.bot = str(resp.get("user") or self.bot)
        who = f"bot {resp.get('user') or resp.get('user_id')} in workspace "
        return Line(OK, "Slack auth.test", who + str(resp.get("team") or resp.get("team_id"))), True

    def channel(self, role: str, configured: str) -> Iterator[Line]:
        """Membership (conversations.info) and history (conversations.history)."""
        step = f"{role} channel {configured}"
        cid = configured if CHANNEL_ID.match(configured) else self._lookup(configured)
        if cid is None:
            yield Line(
                FAIL,
                step,
                "not found",
                f"use the channel's ID (C0…, from the channel's details) for {role} channel, "
                "or add the channels:read scope so the bot can look the name up; a private "
                f"channel is invisible until the bot is invited: /invite @{self.bot} in it",
            )
            return
        try:
            info: dict[str, Any] = self.client.conversations_info(channel=cid)["channel"]
        except (SlackApiError, *TRANSPORT_ERRORS) as exc:
            yield Line(
                FAIL,
                step,
                f"conversations.info failed: {_slack_error(exc)}",
                f"invite the bot to the channel (/invite @{self.bot}) and check the "
                "configured channel ID",
            )
            return
        label = f"#{info.get('name') or configured.lstrip('#')}"
        if info.get("is_archived"):
            yield Line(
                FAIL, step, f"{label} is archived", "unarchive it or configure another channel"
            )
            return
        if not info.get("is_member"):
            yield Line(
                FAIL,
                step,
                f"bot is not in {label}",
                f"/invite @{self.bot} in {label} (type it in that channel)",
            )
            yield Line(SKIP, f"{role} channel history", "skipped (not a member)")
            return
        yield Line(OK, step, f"bot is a member of {label} ({cid}) and may post there")
        try:
            self.client.conversations_history(channel=cid, limit=1)
        except (SlackApiError, *TRANSPORT_ERRORS) as exc:
            yield Line(
                FAIL,
                f"{role} channel history",
                f"cannot read {label}: {_slack_error(exc)}",
                "add the channels:history scope (groups:history for a private channel) "
                "under OAuth & Permissions and reinstall the app; the bot reads the "
                "channel to post nothing twice after a crash",
            )
            return
        yield Line(OK, f"{role} channel history", f"can read {label}")

    def _lookup(self, name: str) -> str | None:
        from bot.slack.client import Pacer
        from bot.slack.web import SlackNotifier

        return SlackNotifier(self.client, Pacer(0, 1)).channel_id(name)

    def slash_mode(self, port_free: Callable[[int], bool]) -> Line:
        slack = self.settings.slack
        if slack.socket_mode:
            exc = probe_app_token(self.client, slack.app_token.value)
            if exc is not None:
                problem = app_token_problem(exc) or _slack_error(exc)
                return Line(
                    FAIL,
                    "/veeam over Socket Mode",
                    problem,
                    "generate an app-level token (xapp-…) with the connections:write scope "
                    "under Basic Information → App-Level Tokens, and enable Socket Mode",
                )
            return Line(OK, "/veeam over Socket Mode", "apps.connections.open accepted the token")
        if not slack.signing_secret:
            return Line(
                FAIL,
                "/veeam over HTTP",
                "SLACK_SIGNING_SECRET is not set",
                "copy the Signing Secret from the app's Basic Information page, or set "
                "SLACK_APP_TOKEN to use Socket Mode instead",
            )
        port = self.settings.port
        if not port_free(port):
            return Line(
                FAIL,
                "/veeam over HTTP",
                f"port {port} is taken on this host",
                "stop what listens there (a running bot?) or set PORT to a free port",
            )
        return Line(
            OK,
            "/veeam over HTTP",
            f"signing secret set; Slack must reach this host on port {port} at /slack/events",
        )

    def home_tab(self) -> Line:
        """The Home tab needs the app to subscribe to app_home_opened; only the app's
        manifest says whether it does, and reading it takes an app configuration token."""
        slack = self.settings.slack
        step = "Home tab event (app_home_opened)"
        if not slack.config_token or not slack.app_id:
            why = (
                "not checked: set SLACK_APP_CONFIG_TOKEN and SLACK_APP_ID to let check read "
                "the app's manifest (slack/manifest.yml subscribes to it)"
            )
            return Line(SKIP, step, why)
        client = WebClient(token=slack.config_token.value, base_url=slack.api_url, timeout=10)
        try:
            manifest = client.apps_manifest_export(app_id=slack.app_id)["manifest"] or {}
        except (SlackApiError, *TRANSPORT_ERRORS) as exc:
            fix = (
                "check SLACK_APP_CONFIG_TOKEN (an app configuration token, from "
                "api.slack.com/apps) and SLACK_APP_ID"
            )
            return Line(FAIL, step, _slack_error(exc), fix)
        subscriptions = (manifest.get("settings") or {}).get("event_subscriptions") or {}
        events = subscriptions.get("bot_events") or []
        home = ((manifest.get("features") or {}).get("app_home") or {}).get("home_tab_enabled")
        missing = [
            what
            for what, ok in (
                ("the app_home_opened bot event", "app_home_opened" in events),
                ("the Home tab", bool(home)),
            )
            if not ok
        ]
        if missing:
            fix = (
                "add app_home_opened under Event Subscriptions → Subscribe to bot events and "
                "turn on the Home tab under App Home (slack/manifest.yml has both)"
            )
            return Line(FAIL, step, f"the app lacks {' and '.join(missing)}", fix)
        return Line(OK, step, "the app subscribes to app_home_opened and shows the Home tab")


def port_free(port: int) -> bool:
    if port == 0:
        return True
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))  # noqa: S104 - where `run` will listen
        except OSError as exc:
            return exc.errno != errno.EADDRINUSE
    return True


def check_state(settings: Settings) -> Line:
    path = Path(settings.state_path)
    folder = path.parent if path.parent.exists() else path.parent.parent
    if not os.access(folder, os.W_OK):
        return Line(
            FAIL,
            "state store",
            f"cannot write in {folder}",
            "set BOT_STATE_PATH to a file in a folder the bot's user may write, on a disk "
            "that persists across restarts",
        )
    what = "exists" if path.exists() else "will be created"
    return Line(OK, "state store", f"{path} ({what})")


def run_checks(settings: Settings, templates: Callable[[], str]) -> list[Line]:
    """Every step, in order; `templates` renders the templates (returns a summary, raises
    BotError naming the file and line)."""
    lines: list[Line] = []
    try:
        lines.append(Line(OK, "templates", templates()))
    except BotError as exc:
        lines.append(Line(FAIL, "templates", str(exc), "fix the template override named above"))
    lines.append(check_state(settings))
    for server in settings.servers:
        lines += check_em(server, settings)
    slack = SlackChecks(settings)
    token_line, token_ok = slack.token()
    lines.append(token_line)
    channels = [("alert", settings.alerts.channel)]
    if settings.digest.enabled and settings.digest_channel != settings.alerts.channel:
        channels.append(("digest", settings.digest_channel))
    for n, route in enumerate(settings.alerts.routes, 1):  # each route's, once
        if route.channel not in {c for _, c in channels}:
            channels.append((f"route #{n}", route.channel))
    for role, configured in channels:
        if not configured:
            lines.append(
                Line(
                    FAIL,
                    f"{role} channel",
                    "not configured",
                    f"set SLACK_{role.upper()}_CHANNEL (or "
                    f"[{'alerts' if role == 'alert' else 'digest'}] channel) to the channel's ID",
                )
            )
        elif token_ok:
            lines += slack.channel(role, configured)
        else:
            lines.append(Line(SKIP, f"{role} channel {configured}", "skipped (no Slack token)"))
    lines.append(slack.slash_mode(port_free))
    lines.append(slack.home_tab())
    return lines
