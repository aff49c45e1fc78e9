"""Slack delivery: paced chat.postMessage, error classification, history reconciliation.

slack-sdk's RateLimitErrorRetryHandler waits out 429s (Retry-After). Connection errors are
classified here rather than by slack-sdk's ConnectionErrorRetryHandler, because a dropped
connection after the request was sent leaves the outcome unknown: Slack may have posted, and
a blind retry could post twice. The pipeline reconciles those against channel history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config.render import ALERT_EVENT, Message
from bot.errors import NotifyError
from bot.slack.client import Pacer
from bot.slack.codes import CHANNEL_ID, TRANSPORT_ERRORS, classify, error_code

RECOVERY_EVENT = "veeam_recovery"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Receipt:
    channel: str
    ts: str


class Notifier(Protocol):
    """Where alerts go: Slack, or the demo's console."""

    def post(self, channel: str, message: Message, *, label: str = "") -> Receipt: ...

    def channel_id(self, channel: str) -> str | None: ...

    def find_posted(self, channel: str, uids: set[str], oldest: float) -> dict[str, Receipt]: ...

    def find_events(
        self, channel: str, event_type: str, oldest: float
    ) -> list[tuple[dict[str, Any], Receipt]]: ...

    def update(self, channel: str, ts: str, message: Message) -> None: ...

    def find_in_thread(
        self, channel: str, thread_ts: str, uids: set[str]
    ) -> dict[str, Receipt]: ...


class SlackNotifier:
    """Posts alert messages and finds alerts already in a channel."""

    def __init__(self, client: WebClient, pacer: Pacer) -> None:
        self.client = client
        self.pacer = pacer
        # Called with Slack's error code of each failed post or update (the metrics).
        self.on_error: Callable[[str], None] | None = None

    def _failed(self, exc: Exception, channel: str) -> NotifyError:
        if self.on_error is not None:
            self.on_error(error_code(exc))
        return classify(exc, channel)

    def post(self, channel: str, message: Message, *, label: str = "") -> Receipt:
        """Post one message; `label` names the channel in errors (e.g. "#alerts (C123)")."""
        self.pacer.acquire(channel)
        try:
            resp = self.client.chat_postMessage(
                channel=channel,
                text=message.text,
                blocks=message.blocks or None,
                attachments=message.attachments or None,
                metadata=message.metadata,
                unfurl_links=False,
                unfurl_media=False,
                # The fallback text carries EM text too: no mentions or links made from it.
                parse="none",
                link_names=False,
                thread_ts=message.thread_ts or None,
                reply_broadcast=True if message.broadcast else None,
            )
        except (SlackApiError, *TRANSPORT_ERRORS) as exc:
            raise self._failed(exc, label or channel) from exc
        return Receipt(str(resp.get("channel") or channel), str(resp["ts"]))

    def update(self, channel: str, ts: str, message: Message) -> None:
        """Replace a message the bot posted (chat.update keeps its metadata if given)."""
        try:
            self.client.chat_update(
                channel=channel,
                ts=ts,
                text=message.text,
                blocks=message.blocks or [],
                attachments=message.attachments or [],
                metadata=message.metadata,
                parse="none",
            )
        except (SlackApiError, *TRANSPORT_ERRORS) as exc:
            raise self._failed(exc, channel) from exc

    def find_in_thread(self, channel: str, thread_ts: str, uids: set[str]) -> dict[str, Receipt]:
        """UIDs among `uids` that a reply in the thread already carries in its metadata
        (an alert repeat or a recovery). Raises NotifyError when the thread is unreadable."""
        found: dict[str, Receipt] = {}
        replies = _pages(self.client.conversations_replies, channel, ts=thread_ts)
        for receipt, msg in replies:
            if receipt.ts == thread_ts:
                continue  # the parent
            for uid in (_alert_uids(msg) | _recovery_uids(msg)) & uids:
                found.setdefault(uid, receipt)
            if not uids - found.keys():
                break
        return found

    def channel_id(self, channel: str) -> str | None:
        """The ID of a channel given by name (`#veeam-alerts`), via conversations.list;
        None when it cannot be found or the app lacks channels:read."""
        if CHANNEL_ID.match(channel):
            return channel
        name = channel.lstrip("#")
        cursor = None
        while True:
            try:
                resp = self.client.conversations_list(
                    exclude_archived=True,
                    limit=1000,
                    cursor=cursor,
                    types="public_channel,private_channel",
                )
            except (SlackApiError, *TRANSPORT_ERRORS) as exc:
                log.warning("cannot look up the ID of %s: %s", channel, classify(exc, channel))
                return None
            for ch in resp.get("channels") or []:
                if ch.get("name") == name:
                    return str(ch["id"])
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return None

    def find_posted(self, channel: str, uids: set[str], oldest: float) -> dict[str, Receipt]:
        """UIDs among `uids` already announced in `channel` since `oldest` (epoch seconds),
        read from the alert messages' metadata. Raises NotifyError when history is unreadable."""
        found: dict[str, Receipt] = {}
        if not uids:
            return found
        for receipt, msg in _history(self.client, channel, oldest):
            for uid in _alert_uids(msg) & uids:
                found.setdefault(uid, receipt)
            if not uids - found.keys():
                break
        return found

    def find_events(
        self, channel: str, event_type: str, oldest: float
    ) -> list[tuple[dict[str, Any], Receipt]]:
        """(metadata payload, receipt) of the bot's messages of `event_type` in `channel`
        since `oldest` (epoch seconds). Raises NotifyError when history is unreadable."""
        out = []
        for receipt, msg in _history(self.client, channel, oldest):
            meta = msg.get("metadata") or {}
            if meta.get("event_type") == event_type:
                out.append((dict(meta.get("event_payload") or {}), receipt))
        return out


def _history(
    client: WebClient, channel: str, oldest: float
) -> Iterator[tuple[Receipt, dict[str, Any]]]:
    """Every message of `channel` since `oldest`, newest first, with its metadata."""
    return _pages(client.conversations_history, channel, oldest=f"{oldest:.6f}")


def _pages(
    method: Callable[..., Any], channel: str, **kwargs: str
) -> Iterator[tuple[Receipt, dict[str, Any]]]:
    """The messages of a paged conversations.* call, with their metadata, each with the
    receipt that names it. Raises NotifyError when Slack does not answer."""
    cursor = None
    while True:
        try:
            resp = method(
                channel=channel, limit=200, cursor=cursor, include_all_metadata=True, **kwargs
            )
        except (SlackApiError, *TRANSPORT_ERRORS) as exc:
            raise classify(exc, channel) from exc
        for msg in resp.get("messages") or []:
            yield Receipt(str(resp.get("channel") or channel), str(msg["ts"])), msg
        cursor = (resp.get("response_metadata") or {}).get("next_cursor")
        if not resp.get("has_more") or not cursor:
            return


def _recovery_uids(msg: dict[str, Any]) -> set[str]:
    meta = msg.get("metadata") or {}
    if meta.get("event_type") != RECOVERY_EVENT:
        return set()
    uid = (meta.get("event_payload") or {}).get("uid")
    return {uid} if isinstance(uid, str) else set()


def _alert_uids(msg: dict[str, Any]) -> set[str]:
    meta = msg.get("metadata") or {}
    if meta.get("event_type") != ALERT_EVENT:
        return set()
    sessions = (meta.get("event_payload") or {}).get("sessions") or []
    return {s["uid"] for s in sessions if isinstance(s, dict) and "uid" in s}
