"""Slack delivery: paced chat.postMessage, error classification, history reconciliation.

slack-sdk's RateLimitErrorRetryHandler waits out 429s (Retry-After). Connection errors are
classified here rather than by slack-sdk's ConnectionErrorRetryHandler, because a dropped
connection after the request was sent leaves the outcome unknown: Slack may have posted, and
a blind retry could post twice. The pipeline reconciles those against channel history.
"""

from __future__ import annotations

import logging
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.jitter import RandomJitter
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.config.render import ALERT_EVENT, Message
from bot.errors import NotifyError

RECOVERY_EVENT = "veeam_recovery"

log = logging.getLogger(__name__)
AUTH_ERRORS = {
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "missing_scope",
    "no_permission",
}
# A reply or an update that Slack refuses for good because its thread, message or channel is
# no longer there for the bot (deleted, archived, the bot removed): it concerns one problem.
GONE_ERRORS = {
    "thread_not_found",
    "message_not_found",
    "cant_update_message",
    "cannot_reply_to_message",
    "is_archived",
    "channel_not_found",
    "not_in_channel",
}
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{6,}\Z")
CHANNEL_ERRORS = {"channel_not_found", "not_in_channel", "is_archived", "restricted_action"}
# Slack refused the message's content; the same payload will never pass.
CONTENT_ERRORS = {
    "msg_blocks_too_long",
    "invalid_blocks",
    "invalid_blocks_format",
    "msg_too_long",
    "invalid_attachments",
    "too_many_attachments",
    "markdown_text_conflict",
}


def web_client(
    token: str,
    base_url: str,
    *,
    timeout: int = 30,
    rate_limit_retries: int = 5,
    read_retries: int = 3,
    read_backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> WebClient:
    """A WebClient that waits out 429s itself, retries reads (history, replies, channel
    info, auth.test) on 5xx, lost connections and timeouts with backoff, and reports
    everything else to us. `sleep` does the waiting (the bot's lets others write the state
    meanwhile)."""
    # slack-sdk builds its debug line (the whole request body, formatted) on every call when
    # its logger's own level is unset, even if nothing would print it: about half of the
    # client's own time per post. Pin the level it inherits; LOG_LEVEL=DEBUG still shows it.
    sdk_log = logging.getLogger("slack_sdk.web.base_client")
    if sdk_log.level == logging.NOTSET:
        sdk_log.setLevel(sdk_log.getEffectiveLevel())
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=timeout,
        logger=sdk_log,
        retry_handlers=[
            RateLimitRetry(rate_limit_retries, sleep=sleep),
            ReadRetry(read_retries, read_backoff, sleep=sleep),
        ],
    )


# Methods that change nothing in Slack: sending one again is always safe. Writes are not
# retried blindly: an unknown outcome is looked up in the channel first (the pipeline).
READ_METHODS = frozenset(
    {
        "conversations.history",
        "conversations.replies",
        "conversations.info",
        "conversations.list",
        "auth.test",
    }
)
_TRANSIENT = (urllib.error.URLError, ConnectionError, HTTPException, TimeoutError)


class _Waits:
    """What both retry hooks share: the wait before the next attempt is done by `sleep`
    (the store's lock is let go meanwhile), as long as `delay` says."""

    sleep: Callable[[float], None]

    def delay(
        self, state: RetryState, response: HttpResponse | None, error: Exception | None
    ) -> float:
        raise NotImplementedError

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        wait = self.delay(state, response, error)
        state.next_attempt_requested = True
        self.sleep(wait)
        state.increment_current_attempt()


class ReadRetry(_Waits, RetryHandler):
    """slack-sdk's retry hook, for reads only: 5xx, a lost connection or a timeout is tried
    again after 0.5 s, 1 s, 2 s … (with jitter)."""

    def __init__(
        self, retries: int, backoff: float, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        super().__init__(
            max_retry_count=retries,
            interval_calculator=BackoffRetryIntervalCalculator(backoff, RandomJitter()),
        )
        self.sleep = sleep

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if urllib.parse.urlsplit(request.url).path.rsplit("/", 1)[-1] not in READ_METHODS:
            return False
        if response is not None:
            return response.status_code >= 500
        return isinstance(error, _TRANSIENT)

    def delay(
        self, state: RetryState, response: HttpResponse | None, error: Exception | None
    ) -> float:
        return self.interval_calculator.calculate_sleep_duration(state.current_attempt)


class RateLimitRetry(_Waits, RateLimitErrorRetryHandler):
    """slack-sdk's 429 handling (Retry-After, any method: a 429 means nothing was done),
    with the wait done by `sleep`."""

    def __init__(self, retries: int, *, sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(max_retry_count=retries)
        self.sleep = sleep

    def delay(
        self, state: RetryState, response: HttpResponse | None, error: Exception | None
    ) -> float:
        if response is None:
            raise error or RuntimeError("no answer to retry")
        headers = {k.lower(): v for k, v in response.headers.items()}
        after = (headers.get("retry-after") or ["1"])[0]
        try:
            wait = float(after)
        except ValueError:
            wait = 1.0
        return wait + random.random()  # noqa: S311 (jitter, not a secret)


class Pacer:
    """Token bucket per channel: `rate` posts per second with a `burst` allowance."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate, self.burst = rate, max(1, burst)
        self._clock, self._sleep = clock, sleep
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, channel: str) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(channel, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[channel] = (tokens - 1 + wait * self.rate, now + wait)
        if wait > 0:
            self._sleep(wait)


@dataclass(frozen=True)
class Receipt:
    channel: str
    ts: str


def api_error(exc: SlackApiError) -> str:
    """The `error` field of Slack's answer (`channel_not_found`), or "" when it had none."""
    return str(exc.response.get("error", "")) if exc.response.data else ""


def error_code(exc: Exception) -> str:
    """Slack's error code (`channel_not_found`, `ratelimited`), `http_503`, or `connection`."""
    if isinstance(exc, SlackApiError):
        error = api_error(exc)
        status = exc.response.status_code
        return "ratelimited" if status == 429 else error or f"http_{status}"
    return "connection"


def classify(exc: Exception, channel: str) -> NotifyError:
    """Map a slack-sdk/urllib failure to one clear NotifyError."""
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        error = api_error(exc)
        code = error_code(exc)
        if status == 429 or error == "ratelimited":
            return NotifyError(
                "Slack kept rate-limiting the bot (HTTP 429)", retryable=True, code=code
            )
        if status >= 500:
            return NotifyError(
                f"Slack answered HTTP {status}", retryable=True, outcome_unknown=True, code=code
            )
        if error in AUTH_ERRORS:
            return NotifyError(
                f"Slack rejected the bot token ({error}); check SLACK_BOT_TOKEN "
                "and the app's scopes",
                retryable=False,
                code=code,
            )
        if error in CONTENT_ERRORS:
            return NotifyError(
                f"Slack refused the message's content ({error})",
                retryable=False,
                content=True,
                code=code,
            )
        if error in CHANNEL_ERRORS:
            return NotifyError(
                f"Slack cannot post to channel {channel}: {error}; invite the bot "
                "to it or fix the configured channel",
                retryable=False,
                code=code,
            )
        return NotifyError(
            f"Slack refused the message for {channel}: {error or status}",
            retryable=False,
            code=code,
        )
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, ConnectionRefusedError):
        return NotifyError(f"cannot reach Slack: {exc.reason}", retryable=True, code="connection")
    return NotifyError(
        f"lost the connection to Slack ({type(exc).__name__}: {exc})",
        retryable=True,
        outcome_unknown=True,
        code="connection",
    )


def gone(exc: NotifyError) -> bool:
    """Slack refused a reply or an update because its thread, message or channel is gone
    for the bot: settle it for that one problem, never retry it."""
    return not exc.retryable and exc.code in GONE_ERRORS


TRANSPORT_ERRORS = (urllib.error.URLError, HTTPException, ConnectionError, socket.timeout, OSError)


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
