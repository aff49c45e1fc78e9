"""Building and posting the digest: live, paged EM queries; posted once per local day."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from bot.digest import Summary, digest_message, due, unavailable_message, window_filter
from bot.errors import NotifyError, SourceError
from bot.render import Message, Renderer
from bot.settings import Settings
from bot.slack import Notifier, Receipt
from bot.store import Store
from bot.veeam.client import EMClient

log = logging.getLogger(__name__)
DAY = timedelta(hours=24)


class DigestRunner:
    def __init__(
        self, settings: Settings, em: EMClient, store: Store, notifier: Notifier, renderer: Renderer
    ) -> None:
        self.settings, self.em, self.store = settings, em, store
        self.notifier, self.renderer = notifier, renderer
        self._lock = threading.Lock()

    def _stream(self, summary: Summary) -> Summary:
        flt = window_filter(summary.start, summary.end)
        for type_ in self.settings.veeam.session_types:
            for s in self.em.query(type_, flt, sort_asc="EndTime"):
                summary.add(s)
        return summary

    def build(self, now: datetime, window: timedelta = DAY) -> Message:
        """The digest for [now - window, now), compared with the window before it."""
        current = self._stream(Summary(now - window, now))
        previous = self._stream(Summary(now - 2 * window, now - window)).counts
        return digest_message(self.renderer, current, previous, self.settings.digest.timezone)

    def post(self, message: Message) -> Receipt:
        return self.notifier.post(self.settings.digest_channel, message)

    def run_scheduled(self, now: datetime) -> None:
        """Post today's digest if it is due and not yet posted (cron, retries, start-up)."""
        d = self.settings.digest
        with self._lock:
            day = due(now, d.at, d.timezone, d.grace, self.store.meta("digest:last_day"))
            if day is None:
                return
            try:
                message = self.build(now)
            except SourceError as exc:
                self._unavailable(day.isoformat(), str(exc), now)
                return
            try:
                receipt = self.post(message)
            except NotifyError as exc:
                log.error(
                    "digest for %s not posted (%s); retrying within the grace period", day, exc
                )
                return
            self.store.set_meta("digest:last_day", day.isoformat())
            self.store.commit()
            log.info("posted the digest for %s to %s (ts %s)", day, receipt.channel, receipt.ts)

    def _unavailable(self, day: str, reason: str, now: datetime) -> None:
        log.error("digest for %s unavailable: %s", day, reason)
        if self.store.meta("digest:unavailable_day") == day:
            return  # said once already; keep retrying quietly
        until = now + self.settings.digest.grace
        try:
            self.post(unavailable_message(self.renderer, reason, until))
        except NotifyError as exc:
            log.error("could not post that the digest is unavailable: %s", exc)
            return
        self.store.set_meta("digest:unavailable_day", day)
        self.store.commit()
