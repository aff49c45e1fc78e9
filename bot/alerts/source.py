"""Self-monitoring: an Enterprise Manager the bot cannot read is announced, once.

A bot that cannot reach EM is silent, and people trust that silence. When a server has been
unreachable (or has refused the logon) for `[alerts] source_down_after`, one alert goes to
the alert channel: "⚠️ Enterprise Manager em1 unreachable since …: <reason>". When EM answers
again, one reply says it is back and the alert is updated. Never one message per failed poll.

The decision is pure (`step`: the stored state, this poll's outcome and `now`); `SourceWatch`
carries it out. Exactly once, as for alerts: the attempt is stored before each post, and
after a crash or a lost answer the channel (for the alert) or the thread (for the reply) is
searched for it by its metadata before it is posted again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.config.render import Message, context, human_duration, section, slack_date, slack_escape
from bot.errors import NotifyError
from bot.slack.web import RECOVERY_EVENT, Notifier, Receipt
from bot.store.codec import scoped
from bot.store.store import Store

log = logging.getLogger(__name__)
SOURCE_EVENT = "veeam_source_down"


@dataclass(frozen=True)
class Step:
    """What to do after a poll: "none", "post" the down alert, "back" (reply and update),
    or "forget" a short outage nobody was told about. `state` is what to store (None:
    nothing, the server is fine)."""

    action: str
    state: dict[str, Any] | None


def step(state: dict[str, Any] | None, error: str, now: datetime, after: timedelta) -> Step:
    """The next step for one server. `error` is this poll's EM error ("" when EM answered)."""
    t = now.timestamp()
    if not error:
        if state is None:
            return Step("none", None)
        if state.get("ts") or state.get("posting"):
            return Step("back", {**state, "back_at": state.get("back_at") or t})
        return Step("forget", None)
    state = {"since": t, "error": error} if state is None else {**state, "error": error}
    if state.get("back_at"):  # down again before "back" was told: finish that first
        return Step("back", state)
    if not state.get("ts") and t - state["since"] >= after.total_seconds():
        return Step("post", {**state, "posting": state.get("posting") or t})
    return Step("none", state)


def down_message(server: str, since: float, error: str, *, back_at: float | None = None) -> Message:
    """The alert, or (with `back_at`) the alert as it is updated once EM answers again."""
    name = slack_escape(server)
    when = slack_date(datetime.fromtimestamp(since, UTC))
    reason = slack_escape(error)
    if back_at is None:
        head = f"⚠️ Enterprise Manager {name} unreachable since {when}: {reason}"
        foot = (
            "No alerts from this Enterprise Manager can arrive until it answers. "
            "The bot keeps trying every poll and replies here when it is back."
        )
        text = f"Enterprise Manager {server} unreachable since {_iso(since)}: {error}"
    else:
        took = human_duration(back_at - since)
        head = (
            f"✅ Enterprise Manager {name} was unreachable from {when} for {took}; it answers "
            f"again. Last error: {reason}"
        )
        foot = "Failures it listed meanwhile are announced as usual (late ones marked as such)."
        text = f"Enterprise Manager {server} is back after {took}"
    return Message(
        text=slack_escape(text),
        blocks=[section(head), context(foot)],
        metadata={
            "event_type": SOURCE_EVENT,
            "event_payload": {"server": server, "since": since, "back": back_at is not None},
        },
    )


def back_message(server: str, since: float, back_at: float, thread_ts: str) -> Message:
    took = human_duration(back_at - since)
    line = f"✅ Enterprise Manager {slack_escape(server)} answers again (down for {took})."
    return Message(
        text=line,
        blocks=[section(line)],
        thread_ts=thread_ts,
        # found in the thread after a crash, as a recovery reply is
        metadata={"event_type": RECOVERY_EVENT, "event_payload": {"uid": back_id(server, since)}},
    )


def back_id(server: str, since: float) -> str:
    return f"source:{server}:{since:.0f}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


class SourceWatch:
    """Carries out `step` for each server after its poll (under the store's lock)."""

    def __init__(self, store: Store, notifier: Notifier, after: timedelta) -> None:
        self.store, self.notifier, self.after = store, notifier, after
        self.channel = ""  # the alert channel (its ID once known), set before each observe

    def state(self, server_key: str) -> dict[str, Any] | None:
        value = self.store.meta(scoped("source", server_key))
        return value if isinstance(value, dict) else None

    def _save(self, server_key: str, state: dict[str, Any] | None) -> None:
        self.store.set_meta(scoped("source", server_key), state)
        self.store.commit()

    def observe(
        self, server_key: str, label: str, error: str, now: datetime, *, channel: str
    ) -> str:
        """After a poll of one server; returns Slack's error ("" when all went out)."""
        self.channel = channel
        before = self.state(server_key)
        decided = step(before, error, now, self.after)
        if decided.state != before:
            self._save(server_key, decided.state)
        try:
            if decided.action == "post":
                assert decided.state is not None
                self._post(server_key, label, decided.state, now)
            elif decided.action == "back":
                assert decided.state is not None
                self._back(server_key, label, decided.state, error, now)
            elif decided.action == "forget" and before is not None:
                log.info("Enterprise Manager %s answers again (no alert was due)", label)
        except NotifyError as exc:
            log.error("cannot tell Slack about Enterprise Manager %s: %s", label, exc)
            return str(exc)
        return ""

    def _post(self, server_key: str, label: str, state: dict[str, Any], now: datetime) -> None:
        message = down_message(label, state["since"], state["error"])
        receipt = self._find(label, state) if state["posting"] < now.timestamp() else None
        if receipt is None:
            receipt = self.notifier.post(self.channel, message)
        log.warning("Enterprise Manager %s unreachable: alert posted (%s)", label, receipt.ts)
        self._save(server_key, {**state, "ts": receipt.ts, "c": receipt.channel})

    def _find(self, label: str, state: dict[str, Any]) -> Receipt | None:
        """The alert of an earlier attempt, if it reached the channel."""
        try:
            events = self.notifier.find_events(self.channel, SOURCE_EVENT, state["posting"] - 60)
        except NotifyError as exc:
            if exc.retryable:
                raise
            return None
        for payload, receipt in events:
            if payload.get("server") == label and payload.get("since") == state["since"]:
                return receipt
        return None

    def _back(
        self, server_key: str, label: str, state: dict[str, Any], error: str, now: datetime
    ) -> None:
        if not state.get("ts"):  # it came back while its alert was being posted
            receipt = self._find(label, state)
            if receipt is None:
                self._save(server_key, _fresh(state, now) if error else None)
                return
            state = {**state, "ts": receipt.ts, "c": receipt.channel}
        channel, ts = state["c"], state["ts"]
        uid = back_id(label, state["since"])
        if not state.get("replied"):
            if not self.notifier.find_in_thread(channel, ts, {uid}):
                self.notifier.post(
                    channel, back_message(label, state["since"], state["back_at"], ts)
                )
            state = {**state, "replied": True}
            self._save(server_key, state)
        self.notifier.update(
            channel,
            ts,
            down_message(label, state["since"], state["error"], back_at=state["back_at"]),
        )
        log.info("Enterprise Manager %s answers again: replied in %s", label, ts)
        # Down again already: a new outage starts now, with its own alert when due.
        self._save(server_key, _fresh(state, now) if error else None)


def _fresh(state: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {"since": now.timestamp(), "error": state["error"]}
