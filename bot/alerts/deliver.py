"""Stage: deliver, its second half. New alerts go out one per chunk, or as one catch-up
message when there are more than `max_messages_per_poll`; what an earlier poll left pending
is first looked for in Slack (a crash, a lost answer) and adopted rather than posted again."""

from __future__ import annotations

import hashlib
import logging
import threading
from datetime import datetime
from typing import Any

from markupsafe import Markup

from bot.alerts.compose import compose, parts
from bot.alerts.lifecycle import Lifecycle
from bot.alerts.message import CATCHUP_EVENT, catchup_message
from bot.alerts.routes import Router
from bot.alerts.send import Sender
from bot.alerts.stale import Condition
from bot.config.render import Message, Renderer
from bot.config.settings import Settings
from bot.errors import NotifyError
from bot.models import TaskSession
from bot.slack.web import Notifier, Receipt
from bot.store.codec import Pending, session_from_json
from bot.store.schema import ALERTS, CATCHUPS, NOTES
from bot.store.store import Store

log = logging.getLogger(__name__)
# Messages between commits of delivery records. The committed pending marks cover a crash;
# these commits only shorten the history check after one, and each rewrites index pages.
COMMIT_EVERY = 500


class Delivery:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        notifier: Notifier,
        renderer: Renderer,
        *,
        sender: Sender,
        life: Lifecycle,
        stopping: threading.Event,
        owns: set[str],
    ) -> None:
        self.settings, self.store = settings, store
        self.notifier, self.renderer = notifier, renderer
        self.sender, self.life, self.stopping, self.owns = sender, life, stopping, owns
        self.server = settings.veeam.server
        self.settings = settings

    @property
    def settings(self) -> Settings:
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        """The routes are compiled again when the configuration changes."""
        self._settings = value
        self.router = Router(value.alerts.routes, value.alerts.channel)

    # ------------------------------------------------------------------ routes
    def channels(self, s: TaskSession) -> list[str]:
        """Where a new alert for `s` goes, as channel IDs once known: the channel its
        problem opens in, then the copies of `continue` routes."""
        return [self.sender.channel_of(c) for c in self.router.channels(s)]

    def primary(self, s: TaskSession) -> str:
        return self.channels(s)[0]

    def episode_channel(self, c: Condition) -> str:
        """Where a job that stopped running is told: its route by job and server (no VM,
        no result), "" for the alert channel."""
        kind = "replica" if c.detail.get("job_type") == "Replica" else "backup"
        server = self.server  # routes name [[veeam.servers]]
        first = self.router.channels_of(c.job, "", server, kind, "")[0]
        return self._target(self.sender.channel_of(first))

    def _target(self, channel: str) -> str:
        """ "" for the alert channel: the sender learns its ID from the first post."""
        return "" if channel == self.sender.channel else channel

    def mark(self, sessions: list[TaskSession], now: datetime, late: dict[str, float]) -> None:
        """Mark sessions pending, each with the channel its alert will open in."""
        by_channel: dict[str, list[TaskSession]] = {}
        for s in sessions:
            by_channel.setdefault(self.primary(s), []).append(s)
        for channel, group in by_channel.items():
            self.store.mark_pending(group, channel, now, late=late)

    def pending(self) -> list[Pending]:
        """This server's pending alerts."""
        return [p for p in self.store.pending() if p.session.em in self.owns]

    # --------------------------------------------------------------- reconcile
    def reconcile(self, pending: list[Pending], now: datetime) -> list[TaskSession]:
        """Adopt pending sessions that already reached Slack (crash, lost answer); return the
        rest, to be posted again."""
        if not pending:
            return []
        oldest = min(p.since for p in pending) - 60
        # Each is looked for where it was to go: the alert channel may have changed since.
        wanted: dict[str, set[str]] = {}
        for p in pending:
            wanted.setdefault(p.channel or self.sender.channel, set()).add(p.session.uid)
        found: dict[str, Receipt] = {}
        for channel, uids in wanted.items():
            try:
                found.update(self.notifier.find_posted(channel, uids, oldest))
            except NotifyError as exc:
                if exc.retryable:
                    raise
                log.warning(
                    "cannot read %s history to check %d pending alert(s) (%s); posting "
                    "them again, which may repeat some",
                    channel,
                    len(uids),
                    exc,
                )
        by_uid = {p.session.uid: p.session for p in pending}
        by_ts: dict[Receipt, list[TaskSession]] = {}
        for uid, receipt in found.items():
            self.store.record_sent([by_uid[uid]], receipt.channel, receipt.ts, now)
            by_ts.setdefault(receipt, []).append(by_uid[uid])
        for receipt, sessions in by_ts.items():
            self.life.opened(sessions, receipt, {})
        if found:
            log.info("adopted %d alert(s) already in Slack", len(found))
            self.store.commit()
        return [p.session for p in pending if p.session.uid not in found]

    def reconcile_catchups(self, now: datetime) -> None:
        """A catch-up message whose post was cut short (a crash, a lost answer): adopt it if
        it is in the channel, else forget the attempt (its sessions are still pending)."""
        attempts = {
            k: a for k, a in self.store.all_records(CATCHUPS).items() if a.get("e", "") in self.owns
        }
        if not attempts:
            return
        oldest = min(a["t"] for a in attempts.values()) - 60
        found: dict[str, Receipt] = {}
        for channel in {a.get("c") or self.sender.channel for a in attempts.values()}:
            try:
                posted = self.notifier.find_events(channel, CATCHUP_EVENT, oldest)
            except NotifyError as exc:
                if exc.retryable:
                    raise
                posted = []
            found.update({str(payload.get("id")): receipt for payload, receipt in posted})
        pending = {p.session.uid: p.session for p in self.pending()}
        for catchup_id, attempt in attempts.items():
            receipt = found.get(catchup_id)
            sessions = [pending[u] for u in attempt["u"] if u in pending]
            if receipt is not None and sessions:
                log.info("adopted the catch-up message %s already in Slack", receipt.ts)
                self._caught_up(sessions, receipt, catchup_id, now)
            else:
                self.store.drop_records(CATCHUPS, [catchup_id])
        self.store.commit()

    # ----------------------------------------------------------------- deliver
    def deliver(
        self,
        chunks: list[list[TaskSession]],
        now: datetime,
        redelivered: set[str],
        *,
        late: dict[str, float],
        folded: tuple[dict[str, Markup], dict[str, list[TaskSession]]] = ({}, {}),
    ) -> tuple[int, str]:
        """Post each chunk's alert in its channel and record it; (sessions announced,
        Slack's error). A channel given more alerts than `max_messages_per_poll` gets one
        catch-up message instead."""
        status, into = folded
        limit = self.settings.alerts.max_messages_per_poll
        by_channel: dict[str, list[list[TaskSession]]] = {}
        for chunk in chunks:
            by_channel.setdefault(self.primary(chunk[0]), []).append(chunk)
        announced, error = 0, ""
        single: list[list[TaskSession]] = []
        for channel, mine in by_channel.items():
            if not (limit and len(mine) > limit):
                single += mine
                continue
            try:
                announced += self._catchup([s for c in mine for s in c], now, channel)
            except NotifyError as exc:
                log.error("%s; %d alert(s) stay pending", exc, sum(len(c) for c in mine))
                if exc.retryable:
                    return announced, str(exc)
                error = error or str(exc)  # one channel refused for good: the others go on
        done, later = self._each(single, now, redelivered, late, (status, into))
        return announced + done, error or later

    def _each(
        self,
        chunks: list[list[TaskSession]],
        now: datetime,
        redelivered: set[str],
        late: dict[str, float],
        folded: tuple[dict[str, Markup], dict[str, list[TaskSession]]],
    ) -> tuple[int, str]:
        status, into = folded
        announced, error = 0, ""
        jsus = sorted({c[0].job_session_uid for c in chunks})
        notes = {k: v.get("m", "") for k, v in self.store.records(NOTES, jsus).items()}
        every = zip(chunks, parts(chunks, self.primary), strict=True)
        refused: set[str] = set()
        for n, (chunk, part) in enumerate(every, 1):
            if self.stopping.is_set():
                log.info("stopping: %d alert(s) stay pending", sum(len(c) for c in chunks[n - 1 :]))
                break
            msg_late = max((late[s.uid] for s in chunk if s.uid in late), default=None)
            msg = compose(
                self.renderer,
                chunk,
                part,
                decision="redelivery" if chunk[0].uid in redelivered else "first",
                late_by=msg_late,
                status=status,
                later=[f for s in chunk for f in into.get(s.uid, [])],
                note=notes.get(chunk[0].job_session_uid, ""),
                retry=self.settings.actions.retry,
            )
            where = self.channels(chunk[0])
            if where[0] in refused:
                continue  # its channel refused an alert for good this poll: it stays pending
            try:
                receipt = self.sender.send(msg, now, self._target(where[0]))
            except NotifyError as exc:
                error = error or str(exc)
                if exc.retryable:
                    log.error("%s; %d alert(s) stay pending", exc,
                              sum(len(c) for c in chunks[n - 1 :]))  # fmt: skip
                    break
                # one channel (a route's, archived) holds up no other
                log.error("%s; the alerts for %s stay pending", exc, where[0])
                refused.add(where[0])
                continue
            self.store.record_sent(chunk, receipt.channel, receipt.ts, now)
            view: dict[str, Any] = {"part": part[0], "part_count": part[1], "late_by": msg_late}
            if where[1:]:  # `continue` routes: copies, marked before they are posted
                view["copies"] = dict.fromkeys(where[1:], "")
            self.life.opened(chunk, receipt, view)
            announced += len(chunk)
            if where[1:]:
                self.store.commit()
                copied = self.copy(receipt.ts, msg, now)
                if copied:  # Slack failed for now: the copies wait for the next poll
                    error = copied
                    break
            if n % COMMIT_EVERY == 0:
                self.store.commit(wait=False)  # SQLite works while the next posts go out
        self.store.commit()
        return announced, error

    # ------------------------------------------------------------------ copies
    def copy(self, ts: str, msg: Message, now: datetime) -> str:
        """Post the copies an alert's record marks (`copies`: channel → "" until posted);
        Slack's error, if any (the rest wait for the next poll)."""
        record = self.store.records(ALERTS, [ts]).get(ts) or {}
        copies: dict[str, str] = dict(record.get("copies") or {})
        for channel, posted in copies.items():
            if posted:
                continue
            try:
                copies[channel] = self.sender.send(msg, now, channel).ts
            except NotifyError as exc:
                if exc.retryable:
                    return str(exc)
                log.warning("cannot post a copy of %s in %s (%s); left out", ts, channel, exc)
                copies[channel] = f"refused: {exc.code}"
            self.store.put_records(ALERTS, {ts: {**record, "copies": copies}})
            self.store.commit()
        return ""

    def resume_copies(self, now: datetime) -> str:
        """Copies a poll cut short marked and did not post: looked for in their channel
        (their metadata names the sessions), else posted now."""
        for ts, record in self.store.alerts_with_copies_pending().items():
            sessions = [session_from_json(d) for d in record.get("s", [])]
            uids = {s.uid for s in sessions} | {f["uid"] for f in record.get("f", [])}
            copies = dict(record["copies"])
            for channel, posted in copies.items():
                if posted or not uids:
                    continue
                try:
                    found = self.notifier.find_posted(channel, uids, float(ts) - 60)
                except NotifyError as exc:
                    if exc.retryable:
                        return str(exc)
                    found = {}
                if found:
                    copies[channel] = next(iter(found.values())).ts
            self.store.put_records(ALERTS, {ts: {**record, "copies": copies}})
            self.store.commit()
            if any(not v for v in copies.values()):
                error = self.copy(ts, self.life.redrawn(ts), now)
                if error:
                    return error
        return ""

    def _catchup(self, sessions: list[TaskSession], now: datetime, channel: str = "") -> int:
        """Too many job sessions for one message each: one catch-up message for all (of
        one channel). Its attempt is recorded before the post (`catchups`), and its
        metadata carries the id, so that a crash is reconciled like any alert."""
        uids = sorted(s.uid for s in sessions)
        digest = hashlib.sha256("\n".join(uids).encode()).hexdigest()[:12]
        catchup_id = f"{int(now.timestamp())}-{digest}"
        attempt = {"u": uids, "t": now.timestamp(), "e": self.server, "c": channel}
        self.store.put_records(CATCHUPS, {catchup_id: attempt})
        self.store.commit()
        log.info("catch-up: %d sessions in one message (%s)", len(sessions), catchup_id)
        message = catchup_message(self.renderer, sessions, catchup_id)
        receipt = self.sender.send(message, now, self._target(channel))  # raises NotifyError
        self._caught_up(sessions, receipt, catchup_id, now)
        return len(sessions)

    def _caught_up(
        self, sessions: list[TaskSession], receipt: Receipt, catchup_id: str, now: datetime
    ) -> None:
        self.store.record_sent(sessions, receipt.channel, receipt.ts, now)
        self.life.opened(sessions, receipt, {"kind": "catchup"})
        self.store.drop_records(CATCHUPS, [catchup_id])
        self.store.commit()
