"""Retry a job from Slack: the *Retry job* button of a Failed alert and `/veeam retry
job:NAME [em:NAME]` (`[actions] retry`).

Only `[actions] allowed_users` may; anyone else is told who may. The job is found in EM by
name (and backup server), `POST /jobs/{id}?action=retry` is sent once (never again while
that retry runs: a second click says so), and its task is followed (`GET /tasks/{id}`)
until it is finished. Who asked, when, and what EM answered (its refusal quoted) is said in
the alert's thread, or answered to the command. The retry's own result arrives as any
session does: a failure is a repeat of the problem, a success its recovery."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config.render import mention, slack_date, slack_escape
from bot.errors import BotError
from bot.slack.codes import TRANSPORT_ERRORS
from bot.slash.buttons import button_value
from bot.slash.commands import Respond, SlashDeps
from bot.veeam import filters as F
from bot.veeam.client import EMClient
from bot.veeam.tasks import Task

log = logging.getLogger(__name__)
RETRY = "veeam_retry"
FOLLOW_FOR = timedelta(minutes=2)  # how long a task is followed before the bot says so
FOLLOW_EVERY = 2.0  # seconds between looks at the task


class Retries:
    """The retries running now, one per (Enterprise Manager, job, server)."""

    def __init__(self, deps: SlashDeps, sleep: Callable[[float], None] = time.sleep) -> None:
        self.deps, self.sleep = deps, sleep
        self._running: dict[tuple[str, str, str], tuple[str, datetime]] = {}
        self._lock = threading.Lock()

    def refusal(self, user: str) -> str:
        """Why `user` may not retry jobs ("" when they may)."""
        actions = self.deps.settings.actions
        if not actions.retry:
            return "Retrying jobs from Slack is off ([actions] retry)."
        if user in actions.allowed_users:
            return ""
        who = ", ".join(mention(u) for u in actions.allowed_users)
        return f"Only {who} may retry jobs ([actions] allowed_users)."

    def claim(self, key: tuple[str, str, str], user: str, now: datetime) -> str:
        """Hold the job for this retry; "" when free, else who asked for the one running."""
        with self._lock:
            running = self._running.get(key)
            if running is not None:
                by, at = running
                return (f"A retry of {slack_escape(key[1])} is already running, asked by "
                        f"{mention(by)} {slack_date(at)}; it is not asked again.")  # fmt: skip
            self._running[key] = (user, now)
            return ""

    def release(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._running.pop(key, None)

    def run(
        self, key: tuple[str, str, str], user: str, now: datetime, *, agent_run: str = ""
    ) -> str:
        """Ask EM and follow its task; one sentence of mrkdwn saying who, when and what EM
        answered. Never raises. `agent_run`: the job session of an agent job's alert (EM
        retries agent jobs by their own endpoint, found from the run)."""
        em_name, job, server = key
        asked = f"{mention(user)} asked Enterprise Manager to retry *{slack_escape(job)}*"
        asked += f" on {slack_escape(server)}" if server else ""
        asked += f" {slack_date(now)}"
        try:
            client = self.deps.sources().get(em_name) or self.deps.em
            if agent_run:
                uid = self._agent_job_uid(client, agent_run)
            else:
                uid = self._job_uid(client, job, server)
            if uid is None:
                return f":warning: {asked}: EM has no job of that name."
            task = self._follow(client, client.retry_job(uid, agent=bool(agent_run)))
        except BotError as exc:
            return f":warning: {asked}. EM refused: “{slack_escape(str(exc))}”"
        if not task.finished:
            return f":hourglass: {asked}. EM is still at it (task {slack_escape(task.id)})."
        words = slack_escape(task.message or ("done" if task.success else "refused"))
        if task.success:
            return f":repeat: {asked}. EM: “{words}” Its result comes here as any run's does."
        return f":warning: {asked}. EM refused: “{words}”"

    def _job_uid(self, client: EMClient, job: str, server: str) -> str | None:
        found = list(client.query_jobs(F.cmp("Name", "==", job), page_size=50))
        named = [j for j in found if j.name == job]
        on_server = [j for j in named if not server or j.server.casefold() == server.casefold()]
        chosen = on_server or named
        return chosen[0].uid if chosen else None

    def _agent_job_uid(self, client: EMClient, run: str) -> str | None:
        flt = F.cmp("UID", "==", run)
        found = list(client.query_job_sessions("BackupJobSession", flt, page_size=1))
        return found[0].job_uid if found and found[0].job_uid else None

    def _follow(self, client: EMClient, task: Task) -> Task:
        waited = 0.0
        while not task.finished and waited < FOLLOW_FOR.total_seconds():
            self.sleep(FOLLOW_EVERY)
            waited += FOLLOW_EVERY
            task = client.task(task.id)
        return task


def register_retry(app: Any, deps: SlashDeps) -> Retries:
    """The *Retry job* button (HTTP or Socket Mode)."""
    retries = Retries(deps)
    deps.retries = retries  # `/veeam retry` shares the running ones

    def clicked(
        ack: Callable[..., None], body: dict[str, Any], client: WebClient, respond: Respond
    ) -> None:
        ack()
        user = str((body.get("user") or {}).get("id", ""))
        refusal = retries.refusal(user)
        if refusal:
            respond(text=refusal, response_type="ephemeral", replace_original=False)
            return
        value = button_value(body)
        key = (str(value.get("em", "")), str(value.get("job", "")), str(value.get("server", "")))
        now = deps.clock()
        busy = retries.claim(key, user, now)
        if busy:
            respond(text=busy, response_type="ephemeral", replace_original=False)
            return
        channel = str((body.get("channel") or {}).get("id", ""))
        message = body.get("message") or {}
        thread = str(message.get("ts") or (body.get("container") or {}).get("message_ts", ""))

        agent_run = str(value.get("run", "")) if value.get("kind") else ""

        def work(_queued_at: float) -> None:
            try:
                said = retries.run(key, user, now, agent_run=agent_run)
            finally:
                retries.release(key)
            try:
                client.chat_postMessage(channel=channel, thread_ts=thread, text=said)
            except (SlackApiError, *TRANSPORT_ERRORS) as exc:
                log.warning("cannot say the retry of %s in its thread: %s", key[1], exc)
                respond(text=said, response_type="ephemeral", replace_original=False)

        if not deps.pool.try_submit(work):
            retries.release(key)
            respond(text="The bot is busy; try again in a minute.", response_type="ephemeral",
                    replace_original=False)  # fmt: skip
            return
        respond(text=f"Asking Enterprise Manager to retry {slack_escape(key[1])}; its answer "
                "comes in the alert's thread.", response_type="ephemeral",
                replace_original=False)  # fmt: skip

    app.action(RETRY)(clicked)
    return retries
