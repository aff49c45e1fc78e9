"""The composition root: the only place that builds concrete collaborators."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.alerts.pipeline import Pipeline
from bot.console import format_message
from bot.digest_run import DigestRunner
from bot.errors import ConfigError
from bot.render import Message, Renderer, section
from bot.settings import Settings
from bot.slack import Notifier, Pacer, SlackNotifier, web_client
from bot.store import Store
from bot.veeam.client import EMClient

if TYPE_CHECKING:
    from bot.slash.commands import SlashPool
    from bot.surface import Surface

log = logging.getLogger(__name__)


def em_client(settings: Settings) -> EMClient:
    return EMClient(settings.veeam)


def build_renderer(settings: Settings) -> Renderer:
    """The templates, overrides first, each rendered once against sample sessions: an
    override that breaks on some data stops the bot at start with its file and line."""
    from bot.template_check import check_templates

    renderer = Renderer(settings.templates_dir)
    check_templates(renderer)
    return renderer


def open_store(settings: Settings, now: datetime) -> Store:
    return Store(settings.state_path, now=now)


def slack_notifier(settings: Settings) -> SlackNotifier:
    client = web_client(settings.slack.bot_token.value, settings.slack.api_url)
    return SlackNotifier(client, Pacer(settings.alerts.max_posts_per_second, settings.alerts.burst))


def build_pipeline(
    settings: Settings,
    em: EMClient,
    store: Store,
    notifier: Notifier,
    renderer: Renderer,
    *,
    stopping: threading.Event | None = None,
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
    )


class Services:
    """Long-lived collaborators of `run`, closed together."""

    def __init__(self, settings: Settings, now: datetime, stopping: threading.Event) -> None:
        self.settings = settings
        self.renderer = build_renderer(settings)
        self.em = em_client(settings)
        self.store = open_store(settings, now)
        self.notifier = slack_notifier(settings)
        self.pipeline = build_pipeline(
            settings, self.em, self.store, self.notifier, self.renderer, stopping=stopping
        )
        self.digest = DigestRunner(settings, self.em, self.store, self.notifier, self.renderer)
        self._lock = threading.Lock()

    def poll(self, now: datetime) -> None:
        started = time.monotonic()
        with self._lock:
            result = self.pipeline.poll_once(now)
        line = result.log_line(self.settings.veeam.name, time.monotonic() - started)
        (log.warning if result.exit_code else log.info)("%s", line)

    def health(self) -> tuple[int, dict[str, Any]]:
        """/healthz: the last successful poll within 3× the interval (the clock is read
        here, at the edge)."""
        from bot.health import health
        from bot.schedule import utcnow

        return health(self.store.meta("last_poll"), utcnow(), self.settings.poll.interval)

    def redraw(self) -> None:
        """Redraw the alerts marked for it (an acknowledgement), between polls."""
        with self._lock:
            error = self.pipeline.life.flush_updates()
        if error:
            log.warning("could not redraw an alert: %s", error)

    def prune(self, now: datetime) -> None:
        with self._lock:
            removed = self.pipeline.prune(now)
        log.info("retention: forgot %d announced session(s)", removed)

    def close(self) -> None:
        self.em.close()
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
    from bot.slash.buttons import register_buttons
    from bot.slash.commands import SlashDeps, register
    from bot.surface import Surface, bolt_app, check_app_token, check_token

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
        redraw=services.redraw,
    )
    register(app, deps)
    register_buttons(app, deps)
    return Surface(settings, app, on_fatal=on_fatal, health=services.health)


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
        poll=services.poll,
        interval=settings.poll.interval,
        prune=services.prune,
        digest=services.digest.run_scheduled if settings.digest.enabled else None,
        digest_at=settings.digest.at,
        digest_zone=settings.digest.timezone,
    )
    scheduler.start()
    surface.start()
    log.info(
        "polling %s every %s; posting to %s",
        settings.veeam.url,
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


def poll_once_command(settings: Settings, now: datetime) -> int:
    """`poll --once`: one cycle, a summary line on stdout, one error line on stderr."""
    started = time.monotonic()
    renderer = build_renderer(settings)
    with em_client(settings) as em, closing(open_store(settings, now)) as store:
        pipeline = build_pipeline(settings, em, store, slack_notifier(settings), renderer)
        result = pipeline.poll_once(now)
        if not result.em_error:
            pipeline.prune_if_due(now)  # a cron-driven bot has no scheduler to do it
    took = time.monotonic() - started
    log.info("%s", result.log_line(settings.veeam.name, took))
    print(result.summary(took), flush=True)
    if result.em_error:
        print(f"error: {result.em_error}", file=sys.stderr)
    elif result.pending:
        why = result.slack_error or "Slack did not take them"
        print(
            f"error: {result.pending} alert(s) still pending ({why}); they go out on the next run",
            file=sys.stderr,
        )
    return result.exit_code


def digest_command(settings: Settings, now: datetime, window: timedelta, dry_run: bool) -> int:
    """`digest`: build the digest for the window ending now; print it or post it."""
    renderer = build_renderer(settings)
    with em_client(settings) as em, closing(open_store(settings, now)) as store:
        runner = DigestRunner(settings, em, store, slack_notifier(settings), renderer)
        message = runner.build(now, window)
        if dry_run:
            print(format_message(message, colour=sys.stdout.isatty()), end="")
            return 0
        receipt = runner.post(message)
    print(f"posted the digest to {receipt.channel} (ts {receipt.ts})")
    return 0
