"""The composition root: the only place that builds concrete collaborators."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import closing
from datetime import datetime

from bot.pipeline import Pipeline
from bot.render import Renderer
from bot.settings import Settings
from bot.slack import Pacer, SlackNotifier, web_client
from bot.store import Store
from bot.veeam.client import EMClient

log = logging.getLogger(__name__)


def em_client(settings: Settings) -> EMClient:
    return EMClient(settings.veeam)


def build_renderer(settings: Settings) -> Renderer:
    return Renderer(settings.templates_dir)


def open_store(settings: Settings, now: datetime) -> Store:
    return Store(settings.state_path, now=now)


def slack_notifier(settings: Settings) -> SlackNotifier:
    client = web_client(settings.slack.bot_token.value, settings.slack.api_url)
    return SlackNotifier(client, Pacer(settings.alerts.max_posts_per_second, settings.alerts.burst))


def poll_once_command(settings: Settings, now: datetime) -> int:
    """`poll --once`: one cycle, a summary line on stdout, one error line on stderr."""
    started = time.monotonic()
    renderer = build_renderer(settings)
    with em_client(settings) as em, closing(open_store(settings, now)) as store:
        pipeline = Pipeline(settings, em, store, slack_notifier(settings), renderer)
        result = pipeline.poll_once(now)
    print(result.summary(time.monotonic() - started), flush=True)
    if result.em_error:
        print(f"error: {result.em_error}", file=sys.stderr)
    elif result.pending:
        why = result.slack_error or "Slack did not take them"
        print(f"error: {result.pending} alert(s) still pending ({why}); they go out on the next "
              "run", file=sys.stderr)  # fmt: skip
    return result.exit_code
