"""The composition root: the only place that builds concrete collaborators."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from bot.alerts.jobmessage import EVENTS
from bot.alerts.mutes import MuteBook
from bot.alerts.pipeline import Pipeline
from bot.alerts.result import PollResult
from bot.alerts.source import SourceWatch
from bot.config.render import Message, Renderer, section
from bot.config.settings import Settings
from bot.digest.run import DigestRunner
from bot.errors import ConfigError
from bot.models import TaskSession
from bot.ops.metrics import Metrics
from bot.slack.client import Pacer, web_client
from bot.slack.console import format_message
from bot.slack.web import Notifier, SlackNotifier
from bot.store.codec import scoped
from bot.store.lock import WriterLock
from bot.store.schema import EPISODES
from bot.store.store import Store
from bot.veeam.client import EMClient

if TYPE_CHECKING:
    from bot.slack.surface import Surface
    from bot.slash.commands import SlashPool

log = logging.getLogger(__name__)
EPISODE_KINDS = tuple(EVENTS)  # stale, disabled, running


def em_client(settings: Settings, metrics: Metrics | None = None) -> EMClient:
    observe = metrics.em_observer(settings.veeam.label) if metrics else None
    return EMClient(settings.veeam, observe=observe)


def em_clients(settings: Settings, stack: ExitStack) -> dict[str, EMClient]:
    """An EM client per server, by its `[[veeam.servers]]` name ("" for the one server of
    `[veeam] url`), each logged out and closed when `stack` closes."""
    return {
        s.server: stack.enter_context(em_client(settings.for_server(s))) for s in settings.servers
    }


def build_renderer(settings: Settings) -> Renderer:
    """The templates, overrides first, each rendered once against sample sessions: an
    override that breaks on some data stops the bot at start with its file and line."""
    from bot.ops.template_check import check_templates

    renderer = Renderer(settings.templates_dir)
    check_templates(renderer)
    return renderer


def open_store(settings: Settings, now: datetime) -> Store:
    return Store(settings.state_path, now=now)


def slack_notifier(settings: Settings, store: Store | None = None) -> SlackNotifier:
    """The Slack client of the alerts. With the bot's `store`, its waits (pacing, 429s,
    read backoff) let go of the store's lock, so that a button click is not kept waiting."""
    sleep = store.lock.sleep if store is not None else time.sleep
    client = web_client(
        settings.slack.bot_token.value,
        settings.slack.api_url,
        read_backoff=settings.alerts.backoff.total_seconds(),
        sleep=sleep,
    )
    pacer = Pacer(settings.alerts.max_posts_per_second, settings.alerts.burst, sleep=sleep)
    return SlackNotifier(client, pacer)


def build_pipeline(
    settings: Settings,
    em: EMClient,
    store: Store,
    notifier: Notifier,
    renderer: Renderer,
    *,
    stopping: threading.Event | None = None,
    lock: WriterLock | None = None,
) -> Pipeline:
    return Pipeline(
        settings,
        em,
        store,
        notifier,
        renderer,
        retries=settings.alerts.retries,
        stopping=stopping,
        backoff=settings.alerts.backoff.total_seconds(),
        lock=lock,
    )


class Services:
    """Long-lived collaborators of `run` (and of `poll --once`), closed together: one store,
    one Slack client, and one EM client and pipeline per Enterprise Manager."""

    def __init__(self, settings: Settings, now: datetime, stopping: threading.Event) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.renderer = build_renderer(settings)
        self.store = open_store(settings, now)
        self.notifier = slack_notifier(settings, self.store)
        self.notifier.on_error = self.metrics.slack_error
        # Held while the store changes (polls of every server, redraws, retention, buttons,
        # mutes, the digest's records): the store's own.
        self.lock = self.store.lock
        self.ems: dict[str, EMClient] = {}
        self.pipelines: dict[str, Pipeline] = {}
        for server in settings.servers:
            own = settings.for_server(server)
            em = em_client(own, self.metrics)
            self.ems[server.label] = em
            self.pipelines[server.label] = build_pipeline(
                own, em, self.store, self.notifier, self.renderer, stopping=stopping, lock=self.lock
            )
        self.em = next(iter(self.ems.values()))
        self.labels = {s.server: s.label for s in settings.servers}
        self.store.on_sent = self._count_sent
        named = {s.server: self.ems[s.label] for s in settings.servers if s.server}
        self.digest = DigestRunner(
            settings, named or self.em, self.store, self.notifier, self.renderer
        )
        # routes with `digest = true`: their channels get a digest of what they match
        self.route_digests = [
            DigestRunner(settings, named or self.em, self.store, self.notifier, self.renderer,
                         route=r)
            for r in settings.alerts.routes
            if r.digest
        ]  # fmt: skip
        self.watch = SourceWatch(self.store, self.notifier, settings.alerts.source_down_after)
        self.metrics.read_state(self._state_gauges)
        self.metrics.read_episodes(self._episode_gauges)
        for label, pipeline in self.pipelines.items():
            last = self.store.meta(scoped("last_poll", pipeline.server)) or {}
            if isinstance(last.get("ok_at"), int | float):
                self.metrics.last_success.labels(server=label).set(last["ok_at"])

    def _count_sent(self, sessions: list[TaskSession]) -> None:
        for s in sessions:
            label = self.labels.get(s.em, s.em)
            self.metrics.announced.labels(server=label, result=s.result).inc()

    def poll(self, label: str, now: datetime) -> PollResult:
        """One poll of one Enterprise Manager, then what it tells about that server (its
        self-monitoring alert, the metrics, the log line)."""
        started = time.monotonic()
        pipeline = self.pipelines[label]
        result = pipeline.poll_once(now)
        with self.lock:
            error = self.watch.observe(
                pipeline.server, label, result.em_error, now, channel=pipeline.source_channel
            )
            result.slack_error = result.slack_error or error
        took = time.monotonic() - started
        self._counters(label, result, now)
        line = result.log_line(label, took)
        (log.warning if result.exit_code else log.info)("%s", line)
        return result

    def poll_all(self, now: datetime) -> dict[str, PollResult]:
        """Every server at once, each on its own thread (`poll --once`)."""
        if len(self.pipelines) == 1:
            label = next(iter(self.pipelines))
            return {label: self.poll(label, now)}
        with ThreadPoolExecutor(len(self.pipelines), thread_name_prefix="poll") as pool:
            futures = {label: pool.submit(self.poll, label, now) for label in self.pipelines}
            return {label: f.result() for label, f in futures.items()}

    def _counters(self, label: str, result: PollResult, now: datetime) -> None:
        m = self.metrics
        m.polls.labels(server=label, outcome=result.outcome).inc()
        if result.em_error:
            m.poll_errors.labels(server=label, kind=result.em_error_kind or "em_error").inc()
        if result.slack_error:
            m.poll_errors.labels(server=label, kind="slack").inc()
        if result.outcome == "ok":
            m.last_success.labels(server=label).set(now.timestamp())
        m.fetched.labels(server=label).inc(result.fetched)
        m.retries.labels(server=label).inc(result.retries)
        m.recovered.labels(server=label).inc(result.recovered)
        m.pending.labels(server=label).set(result.pending)
        m.source_down.labels(server=label).set(1 if result.em_error else 0)

    def _state_gauges(self) -> tuple[dict[str, int], int]:
        """Open problems per server and active mutes, read when /metrics is scraped (the
        clock is read here, at the edge)."""
        from bot.schedule import utcnow

        counts = self.store.open_problems_by_em()
        problems = {name: counts.get(name, 0) for name in self.pipelines}
        return problems, len(MuteBook(self.store).active(utcnow()))

    def run_digests(self, now: datetime) -> None:
        """The daily digest, then each route's (`digest = true`), each posted once."""
        for runner in (self.digest, *self.route_digests):
            runner.run_scheduled(now)

    def _episode_gauges(self) -> dict[tuple[str, str], int]:
        """Jobs not running per server and kind (stale, disabled, running), every kind of
        every server named, 0 included, so that an alert rule sees it fall back."""
        counts = {(label, kind): 0 for label in self.pipelines for kind in EPISODE_KINDS}
        names = {p.settings.veeam.label: label for label, p in self.pipelines.items()}
        for key, row in self.store.all_records(EPISODES).items():
            if row.get("state") in ("open", "muted", "posting"):
                em, kind, _uid = json.loads(key)
                label = names.get(em, em)
                counts[(label, kind)] = counts.get((label, kind), 0) + 1
        return counts

    def health(self) -> tuple[int, dict[str, Any]]:
        """/healthz: every server's last successful poll within 3× the interval (the clock
        is read here, at the edge)."""
        from bot.ops.health import combined, health
        from bot.schedule import utcnow

        now, interval = utcnow(), self.settings.poll.interval
        each = {
            label: health(self.store.meta(scoped("last_poll", p.server)), now, interval)
            for label, p in self.pipelines.items()
        }
        return combined(each)

    def redraw(self) -> None:
        """Redraw the alerts marked for it (an acknowledgement), between polls."""
        with self.lock:
            error = self._first.life.flush_updates()
        if error:
            log.warning("could not redraw an alert: %s", error)

    def prune(self, now: datetime) -> int:
        """Retention over the whole store, with every server's checkpoints."""
        with self.lock:
            removed = self._first.prune(now, self._checkpoints())
        log.info("retention: forgot %d announced session(s)", removed)
        return removed

    def prune_if_due(self, now: datetime) -> None:
        """Once a day, for a bot run as `poll --once` from cron."""
        with self.lock:
            removed = self._first.prune_if_due(now, self._checkpoints())
        if removed is not None:
            log.info("retention: forgot %d announced session(s)", removed)

    @property
    def _first(self) -> Pipeline:
        return next(iter(self.pipelines.values()))

    def _checkpoints(self) -> list[datetime | None]:
        return [c for p in self.pipelines.values() for c in p.checkpoints()]

    def close(self) -> None:
        for em in self.ems.values():
            em.close()
        self.store.close()


def slash_surface(
    settings: Settings,
    services: Services,
    pool: SlashPool,
    on_fatal: Callable[[str], None] | None = None,
) -> Surface:
    """The Bolt app with `/veeam`, behind Socket Mode or HTTP."""
    # Imported here: `poll --once` and `digest` start faster without Bolt and the scheduler.
    from bot.schedule import utcnow
    from bot.slack.surface import Surface, bolt_app, check_app_token, check_token
    from bot.slash.buttons import register_buttons
    from bot.slash.commands import SlashDeps, register
    from bot.slash.home import register_home
    from bot.slash.retry import register_retry

    client = web_client(settings.slack.bot_token.value, settings.slack.api_url)
    check_token(client)
    if settings.slack.socket_mode:
        check_app_token(client, settings.slack.app_token.value)
    app = bolt_app(settings, client)
    deps = SlashDeps(
        settings,
        services.em,
        services.store,
        services.renderer,
        pool,
        utcnow,
        announce=lambda line: _announce(services.notifier, settings.alerts.channel, line),
        announce_in=lambda channel, line: _announce(services.notifier, channel, line),
        redraw=services.redraw,
        ems=dict(services.ems) if settings.many else {},
    )
    register(app, deps)
    register_buttons(app, deps)
    register_home(app, deps)
    register_retry(app, deps)
    return Surface(
        settings, app, on_fatal=on_fatal, health=services.health, metrics=services.metrics
    )


def _announce(notifier: Notifier, channel: str, line: str) -> None:
    """One line of mrkdwn in the alert channel (mutes and unmutes are said there)."""
    notifier.post(channel, Message(text=line, blocks=[section(line)]))


def run_forever(settings: Settings) -> int:
    """`run`: poll at once and then on the interval, serve `/veeam`; stop cleanly on SIGTERM
    or SIGINT."""
    from bot.schedule import build_scheduler, utcnow
    from bot.slash.commands import SlashPool

    stop = threading.Event()
    fatal: list[str] = []

    def on_fatal(problem: str) -> None:
        fatal.append(problem)
        stop.set()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    services = Services(settings, utcnow(), stop)
    pool = SlashPool(settings.slash.workers)
    try:
        surface = slash_surface(settings, services, pool, on_fatal)
    except BaseException:
        pool.shutdown()
        services.close()
        raise
    scheduler = build_scheduler(
        polls={label: partial(_poll_job, services, label) for label in services.pipelines},
        interval=settings.poll.interval,
        prune=services.prune,
        digest=services.run_digests if settings.digest.enabled else None,
        digest_at=settings.digest.at,
        digest_zone=settings.digest.timezone,
    )
    scheduler.start()
    surface.start()
    log.info(
        "polling %s every %s; posting to %s",
        ", ".join(s.url for s in settings.servers),
        settings.poll.interval,
        settings.alerts.channel,
    )
    try:
        stop.wait()
    finally:
        surface.stop()
        scheduler.shutdown(wait=True)
        pool.shutdown(wait=True, cancel_futures=True)
        services.close()
    if fatal:
        raise ConfigError(fatal)
    log.info("stopped")
    return 0


def _poll_job(services: Services, label: str, now: datetime) -> None:
    services.poll(label, now)


def poll_once_command(settings: Settings, now: datetime) -> int:
    """`poll --once`: one cycle of every server, a summary line each on stdout, one error
    line each on stderr; the worst exit code."""
    started = time.monotonic()
    services = Services(settings, now, threading.Event())
    try:
        results = services.poll_all(now)
        if not any(r.em_error for r in results.values()):
            services.prune_if_due(now)  # a cron-driven bot has no scheduler to do it
    finally:
        services.close()
    took = time.monotonic() - started
    for label, result in results.items():
        prefix = f"{label}: " if settings.many else ""
        print(prefix + result.summary(took), flush=True)
        if result.em_error:
            print(f"error: {prefix}{result.em_error}", file=sys.stderr)
        elif result.pending:
            why = result.slack_error or "Slack did not take them"
            print(
                f"error: {prefix}{result.pending} alert(s) still pending ({why}); they go out "
                "on the next run",
                file=sys.stderr,
            )
    return max(r.exit_code for r in results.values())


def digest_command(settings: Settings, now: datetime, window: timedelta, dry_run: bool) -> int:
    """`digest`: build the digest for the window ending now; print it or post it."""
    renderer = build_renderer(settings)
    with ExitStack() as stack:
        clients = em_clients(settings, stack)
        store = stack.enter_context(closing(open_store(settings, now)))
        ems = clients if settings.many else clients[""]
        runner = DigestRunner(settings, ems, store, slack_notifier(settings), renderer)
        message = runner.build(now, window)
        if dry_run:
            print(format_message(message, colour=sys.stdout.isatty()), end="")
            return 0
        receipt = runner.post(message)
    print(f"posted the digest to {receipt.channel} (ts {receipt.ts})")
    return 0
