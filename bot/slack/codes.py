"""What Slack's errors mean: the codes that say the token is bad, the content refused, the
thread or channel gone, and `classify`, which turns any failure into one clear NotifyError."""

from __future__ import annotations

import re
import socket
import urllib.error
from http.client import HTTPException

from slack_sdk.errors import SlackApiError

from bot.errors import NotifyError

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
