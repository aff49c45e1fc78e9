"""The `/veeam` slash command: ack at once, work in our own bounded pool, answer on
response_url (ephemeral unless the user says `share`)."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from slack_bolt import App

from bot import __version__
from bot.alerts.jobfetch import as_session
from bot.alerts.mutes import USAGE, Mute, MuteBook, parse_mute
from bot.alerts.routes import Router
from bot.alerts.windows import active
from bot.config.convert import DAYS
from bot.config.render import Renderer, mention, section, slack_date, slack_escape
from bot.config.settings import Settings, Window
from bot.errors import BotError, QueryError
from bot.models import JOB_SESSION_OF, SESSION_TYPES, utc_from_epoch
from bot.slash.answers import (
    Reply,
    Status,
    help_reply,
    plain,
    query_reply,
    session_reply,
    status_reply,
    usage_error,
)
from bot.slash.jobs import inventory_rows, jobs_reply, parse_jobs_words
from bot.slash.lookup import run_on
from bot.slash.query import Query, parse_query, tokenize
from bot.slash.routes import parse_route_words, routes_reply
from bot.store.codec import scoped
from bot.store.store import Store
from bot.veeam import filters as F
from bot.veeam.client import EMClient

log = logging.getLogger(__name__)
UID = re.compile(r"urn:veeam:(\w+):[0-9a-fA-F-]{36}\Z|[0-9a-fA-F-]{36}\Z")
Respond = Callable[..., Any]
JOB_RUNS = {run: task for task, run in JOB_SESSION_OF.items()}  # job-session type → task type


RESPONSE_URL_LIFETIME = 30 * 60.0  # seconds Slack accepts answers on a response_url
BUSY = (
    "The bot is busy answering other /veeam queries; try again in a minute. "
    "(Enterprise Manager may be slow right now.)"
)


class SlashPool:
    """The workers that run `/veeam` queries, with a bounded queue: beyond `queue` waiting
    queries (4× the workers by default) a new one is refused at once, so that no answer can
    wait past the 30 minutes Slack keeps a response_url open."""

    def __init__(
        self,
        workers: int,
        queue: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workers = workers
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="veeam-cmd")
        self._slots = threading.BoundedSemaphore(
            workers + (4 * workers if queue is None else queue)
        )
        self._clock = clock

    def try_submit(self, work: Callable[[float], None]) -> bool:
        """Queue `work(queued_at)`; False when the queue is full."""
        if not self._slots.acquire(blocking=False):
            return False
        try:
            future = self._executor.submit(work, self._clock())
        except RuntimeError:  # shutting down
            self._slots.release()
            return False
        future.add_done_callback(lambda _: self._slots.release())
        return True

    def expired(self, queued_at: float) -> bool:
        return self._clock() - queued_at > RESPONSE_URL_LIFETIME - 60

    def shutdown(self, *, wait: bool = True, cancel_futures: bool = False) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=cancel_futures)


@dataclass
class SlashDeps:
    settings: Settings
    em: EMClient  # the first (or only) Enterprise Manager
    store: Store
    renderer: Renderer
    pool: SlashPool
    clock: Callable[[], datetime]
    # Posts one line of mrkdwn to the alert channel (mutes are said there); None: nowhere.
    announce: Callable[[str], None] | None = None
    # Redraws the alerts marked for it (after an acknowledgement); None: the next poll does.
    redraw: Callable[[], None] | None = None
    # Every Enterprise Manager by its `[[veeam.servers]]` name; empty: only `em`, unnamed.
    ems: dict[str, EMClient] = field(default_factory=dict)
    # The retries running (`bot.slash.retry.Retries`), once the Retry button is registered.
    retries: Any = None
    # Posts one line of mrkdwn in a route's channel (a mute concerning it); None: nowhere.
    announce_in: Callable[[str, str], None] | None = None

    def sources(self) -> dict[str, EMClient]:
        return self.ems or {"": self.em}


def unescape_slack(text: str) -> str:
    """Slack sends command text with `&`, `<` and `>` as entities; the words mean the
    characters (`vm:"R&D lab"` looks for the VM named R&D lab)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def allowed(settings: Settings, channel: str, user: str) -> bool:
    slash = settings.slash
    if slash.allowed_channels and channel not in slash.allowed_channels:
        return False
    return not (slash.allowed_users and user not in slash.allowed_users)


def register(app: App, deps: SlashDeps) -> None:
    """Attach `/veeam` to a Bolt app."""

    @app.command("/veeam")
    def veeam(ack: Callable[..., None], command: dict[str, Any], respond: Respond) -> None:
        text = unescape_slack(command.get("text") or "").strip()
        if not allowed(deps.settings, command.get("channel_id", ""), command.get("user_id", "")):
            ack(
                **plain(
                    "Sorry, /veeam is not enabled for you in this channel. Ask your "
                    "Slack admin to add it to the bot's allowed channels or users."
                ).payload()
            )
            return
        now = deps.clock()
        try:
            job = prepare(text, deps, now, user=command.get("user_id", ""))
        except QueryError as exc:
            ack(**usage_error(str(exc)).payload())
            return
        if isinstance(job, Reply):
            ack(**job.payload())
            return
        if not deps.pool.try_submit(lambda queued_at: _answer(job, respond, deps, queued_at)):
            log.warning("/veeam refused: %d queries already waiting", deps.pool.workers * 4)
            ack(**plain(BUSY).payload())
            return
        ack()


Work = Callable[[], Reply]


def prepare(text: str, deps: SlashDeps, now: datetime, *, user: str = "") -> Reply | Work:
    """Validate the words at once (so a bad word is answered in the ack) and return either an
    immediate reply or the work to run in the pool."""
    words = tokenize(text)
    head = words[0].lower() if words else ""
    share = "share" in (w.lower() for w in words[1:]) if head in ("session", "status") else False
    if head == "mute":
        mute = parse_mute(words[1:], user, now)
        return lambda: mute_reply(deps, mute)
    if head == "unmute":
        if len(words) != 2:
            raise QueryError(f"say which mute: /veeam unmute <id> (see /veeam mutes)\n{USAGE}")
        return lambda: unmute_reply(deps, words[1], user)
    if head == "mutes":
        return mutes_reply(MuteBook(deps.store).active(now), deps.settings.mutes.windows, now)
    if head == "retry":
        return _retry(deps, words[1:], user, now)
    if head == "routes":
        return routes_reply(deps.settings, parse_route_words(words[1:]))
    if head == "jobs":
        kind, em = parse_jobs_words(words[1:])
        on = deps.settings.jobs.refresh > timedelta(0)
        return lambda: jobs_reply(
            inventory_rows(deps.store, deps.settings, now, em), kind, now, inventory=on
        )
    if head == "help":
        return help_reply(deps.renderer)
    if head == "status":
        return lambda: status_reply(deps.renderer, status(deps, now))
    if head == "session":
        rest = [w for w in words[1:] if w.lower() != "share"]
        if len(rest) != 1 or not UID.match(rest[0]):
            raise QueryError(
                "usage: /veeam session <UID>, e.g. /veeam session "
                "urn:veeam:ReplicaTaskSession:efe448ad-6d52-496b-ba79-decd586713eb"
            )
        return lambda: one_session(deps, rest[0], share)
    query = parse_query(
        text, now=now, default_types=deps.settings.veeam.session_types, allow_share=True
    )
    return lambda: query_answer(deps, query, text)


RETRY_USAGE = "usage: /veeam retry job:NAME [em:NAME]"


def _retry(deps: SlashDeps, words: list[str], user: str, now: datetime) -> Reply | Work:
    """`/veeam retry job:NAME [em:NAME]`: as the Retry job button, answered to the command."""
    named = dict(w.partition(":")[::2] for w in words)
    job, em = named.pop("job", ""), named.pop("em", None)
    if not job or named or any(":" not in w for w in words):
        raise QueryError(RETRY_USAGE)
    retries = deps.retries
    if retries is None or not deps.settings.actions.retry:
        return plain("Retrying jobs from Slack is off ([actions] retry).")
    refusal = retries.refusal(user)  # mrkdwn: its mentions stay mentions
    if refusal:
        return Reply(refusal, [section(refusal)])
    sources = deps.sources()
    if em is not None and em not in sources:
        raise QueryError(f"em:{em} is not an Enterprise Manager the bot watches")
    key = (em if em is not None else next(iter(sources)), job, "")
    busy = retries.claim(key, user, now)
    if busy:
        return Reply(busy, [section(busy)])

    def work() -> Reply:
        try:
            said = retries.run(key, user, now)
        finally:
            retries.release(key)
        return Reply(said, [section(said)])

    return work


def _answer(work: Work, respond: Respond, deps: SlashDeps, queued_at: float) -> None:
    if deps.pool.expired(queued_at):  # Slack would no longer take the answer
        log.warning("/veeam query dropped: it waited past response_url's 30 minutes")
        return
    try:
        reply = work()
    except BotError as exc:
        reply = plain(str(exc))
    except Exception:
        log.exception("/veeam failed")
        reply = plain("Something went wrong while answering; the bot's log has the details.")
    try:
        respond(**reply.payload())
    except Exception as exc:  # an expired or used-up response_url
        log.warning("could not answer on response_url: %s", exc)


def query_answer(deps: SlashDeps, query: Query, text: str) -> Reply:
    answer = run_on(deps.sources(), query)
    shown = " ".join(w for w in tokenize(text) if w.lower() != "share")
    return query_reply(deps.renderer, answer, shown, share=query.share)


def one_session(deps: SlashDeps, uid: str, share: bool) -> Reply:
    """A task session, or a job session (a job-level alert names its run's UID)."""
    m = UID.match(uid)
    named = m.group(1) if m else None
    types = (named,) if named in SESSION_TYPES else () if named in JOB_RUNS else SESSION_TYPES
    runs = (named,) if named in JOB_RUNS else () if named in SESSION_TYPES else tuple(JOB_RUNS)
    for name, client in deps.sources().items():
        for type_ in types:
            full = uid if uid.startswith("urn:") else f"urn:veeam:{type_}:{uid}"
            for s in client.query(type_, F.cmp("UID", "==", full), page_size=1):
                return session_reply(deps.renderer, s._replace(em=name), share=share)
        for run in runs:
            full = uid if uid.startswith("urn:") else f"urn:veeam:{run}:{uid}"
            for js in client.query_job_sessions(run, F.cmp("UID", "==", full), page_size=1):
                s = as_session(js, JOB_RUNS[run])._replace(em=name)
                return session_reply(deps.renderer, s, share=share)
    return plain(f"EM has no session {uid}.")


def status(deps: SlashDeps, now: datetime) -> Status:
    polls, states = [], []
    for name, client in deps.sources().items():
        last = deps.store.meta(scoped("last_poll", name)) or {}
        try:
            client.ping()
            state = f"reachable at {client.base_url}"
        except BotError as exc:
            state = f"unreachable: {exc}"
        prefix = f"{name}: " if name else ""
        states.append(prefix + state)
        if "at" in last:
            polls.append((last["at"], prefix + str(last.get("outcome", ""))))
    return Status(
        last_poll=utc_from_epoch(min(p[0] for p in polls)) if polls else None,
        last_outcome="; ".join(p[1] for p in polls),
        em_state="; ".join(states),
        announced_24h=deps.store.count_announced_since(now - timedelta(hours=24)),
        pending=len(deps.store.pending()),  # of every server
        version=__version__,
    )


def say(deps: SlashDeps, line: str, mute: Mute | None = None) -> None:
    """One line in the alert channel (mutes are said there), and for a mute in the channels
    of the routes it concerns; a failure is only logged."""
    if deps.announce is None:
        return
    try:
        deps.announce(line)
    except BotError as exc:
        log.warning("could not say in the alert channel: %s (%s)", line, exc)
    if mute is None or deps.announce_in is None or not deps.settings.alerts.routes:
        return
    router = Router(deps.settings.alerts.routes, deps.settings.alerts.channel)
    for channel in router.concerning(mute.kind, mute.name, mute.server):
        try:
            deps.announce_in(channel, line)
        except BotError as exc:
            log.warning("could not say in %s: %s (%s)", channel, line, exc)


def mute_reply(deps: SlashDeps, mute: Mute) -> Reply:
    MuteBook(deps.store).add(mute)
    say(deps, f"{mention(mute.by)} muted {slack_escape(mute.line())}", mute)
    return plain(f"Muted {mute.line()} (id {mute.id}; /veeam unmute {mute.id} ends it).")


def unmute_reply(deps: SlashDeps, mute_id: str, user: str) -> Reply:
    mute = MuteBook(deps.store).remove(mute_id)
    if mute is None:
        return plain(f"There is no mute {mute_id}; /veeam mutes lists them.")
    say(deps, f"{mention(user)} unmuted {slack_escape(mute.line())}", mute)
    return plain(f"Unmuted {mute.line()}.")


def mutes_reply(
    mutes: list[Mute], windows: tuple[Window, ...] = (), now: datetime | None = None
) -> Reply:
    """The active mutes, and the maintenance windows (the one in force said so)."""
    if not mutes and not windows:
        return plain("No mutes are active.")
    lines = [slack_escape(f"• {m.id}: {m.line()}") + f" (by {mention(m.by)})" for m in mutes[:40]]
    if not lines:
        lines = ["No mutes are active."]
    in_force = {w.name: end for w, end in (active(windows, now) if now else [])}
    for w in windows[:20]:
        days = ", ".join(DAYS[d] for d in w.days)
        what = f"{w.start:%H:%M}–{w.end:%H:%M} {w.timezone} on {days}"
        if w.jobs or w.servers:
            what += f"; jobs {', '.join(w.jobs) or 'all'}, servers {', '.join(w.servers) or 'all'}"
        line = slack_escape(f"• window {w.name}: {what}")
        if w.name in in_force:
            line += f" · *in force* until {slack_date(in_force[w.name])}"
        lines.append(line)
    return Reply(f"{len(mutes)} active mute(s)", [section("\n".join(lines)[:3000])])
