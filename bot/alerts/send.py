"""Stage: deliver, its first half. `Sender` posts one message: with backoff on passing
errors, looking in the channel after an answer that was lost, and in smaller forms when
Slack refuses the content. The alert channel's ID is learnt once and remembered."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from bot.alerts.message import CATCHUP_EVENT, minimal_message, plain_message
from bot.config.render import Message
from bot.errors import NotifyError
from bot.slack.web import Notifier, Receipt
from bot.store.lock import WriterLock
from bot.store.store import Store

log = logging.getLogger(__name__)


def channel_id(store: Store, notifier: Notifier, configured: str) -> str:
    """A channel's ID once known (history needs one), else the name as configured. Slack
    is asked once; the answer is kept in the state (`channel-id:<name>`)."""
    known = store.meta(f"channel-id:{configured}")
    if not known:
        known = notifier.channel_id(configured)
        if known:
            store.remember(f"channel-id:{configured}", known)
    return str(known or configured)


class Sender:
    def __init__(
        self,
        configured: str,
        store: Store,
        notifier: Notifier,
        lock: WriterLock,
        *,
        sleep: Callable[[float], None],
        retries: int,
        backoff: float,
    ) -> None:
        self.configured, self.store, self.notifier, self.lock = configured, store, notifier, lock
        self.sleep, self.retries, self.backoff = sleep, retries, backoff
        self.channel = configured  # the alert channel: its ID once known
        self.ids: dict[str, str] = {}  # configured channel (routes too) → its ID once known
        self.retried = 0  # posts sent again after a 5xx, a lost connection or a 429

    def resolve(self, others: tuple[str, ...] = ()) -> None:
        """Post to (and read the history of) each channel's ID once it is known: the alert
        channel and the routes' (`others`)."""
        self.channel = channel_id(self.store, self.notifier, self.configured)
        self.ids = {c: channel_id(self.store, self.notifier, c) for c in others}
        self.ids[self.configured] = self.channel

    def channel_of(self, configured: str) -> str:
        """A configured channel ("#name" or an ID) as the ID once known."""
        if configured == self.configured:
            return self.channel
        return self.ids.get(configured) or configured

    def _label(self) -> str:
        c = self.configured
        return c if c == self.channel else f"{c} ({self.channel})"

    def send(self, msg: Message, now: datetime, channel: str = "") -> Receipt:
        """Post to `channel` (a problem's own, for its replies), else to the alert channel;
        when Slack refuses the content, post a smaller form of it at once, and then plain
        text, rather than the same message again."""
        forms = [msg, minimal_message(msg), plain_message(msg)]
        for n, form in enumerate(forms):
            try:
                return self._send_form(form, now, channel)
            except NotifyError as exc:
                if not exc.content or n == len(forms) - 1:
                    raise
                log.warning("%s; sending the alert again in a smaller form", exc)
        raise AssertionError("unreachable")

    def _send_form(self, msg: Message, now: datetime, channel: str = "") -> Receipt:
        """Post with backoff; after an unknown outcome, look in the channel before retrying."""
        uids = {s.uid for s in msg.sessions}
        for attempt in range(self.retries + 1):
            target = channel or self.channel
            try:
                receipt = self.notifier.post(target, msg, label=channel or self._label())
                if not channel and receipt.channel != self.channel:
                    self.store.remember(f"channel-id:{self.configured}", receipt.channel)
                    self.channel = receipt.channel
                return receipt
            except NotifyError as exc:
                if not exc.retryable or attempt == self.retries:
                    raise
                delay = self.backoff * 2**attempt
                log.warning("%s; retrying in %.1fs", exc, delay)
                self.retried += 1
                with self.lock.paused():
                    self.sleep(delay)
                if exc.outcome_unknown:
                    found = self._look(uids, now, msg, target)
                    if found is not None:
                        return found
        raise AssertionError("unreachable")

    def _look(self, uids: set[str], now: datetime, msg: Message, channel: str) -> Receipt | None:
        """The message carrying `uids` if Slack posted it in `channel` (in the thread, for a
        reply; by its id, for a catch-up message)."""
        oldest = (now - timedelta(minutes=10)).timestamp()
        meta = msg.metadata or {}
        try:
            payload = meta.get("event_payload") or {}
            if meta.get("event_type") == CATCHUP_EVENT:
                wanted = payload["id"]
                events = self.notifier.find_events(channel, CATCHUP_EVENT, oldest)
                return next((r for p, r in events if p.get("id") == wanted), None)
            if "episode" in payload and not msg.thread_ts:  # a job that stopped running
                events = self.notifier.find_events(channel, meta["event_type"], oldest)
                return next((r for p, r in events if p.get("episode") == payload["episode"]),
                            None)  # fmt: skip
            if not uids and msg.thread_ts:  # a reply that names no session: its close mark
                uids = {str(payload.get("uid", ""))} - {""}
            if msg.thread_ts:
                found = self.notifier.find_in_thread(channel, msg.thread_ts, uids)
            else:
                found = self.notifier.find_posted(channel, uids, oldest)
        except NotifyError as exc:
            if exc.retryable:
                raise
            # History needs a channel ID; before the first post the bot may only know a name.
            log.warning("cannot read %s history (%s); retrying the post", channel, exc)
            return None
        if found and set(found) >= uids:
            log.info("Slack had posted the alert despite the error; adopting it")
            return next(iter(found.values()))
        return None
