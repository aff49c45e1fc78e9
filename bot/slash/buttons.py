"""The buttons on each alert: Acknowledge, Mute VM 24h, Mute job 24h (Bolt block_actions,
in HTTP and Socket Mode alike). The allow-lists of `/veeam` apply; each button acts once,
and a second click says who already did it."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from slack_bolt import App

from bot.alerts.mutes import Mute, MuteBook
from bot.config.render import mention, slack_date, slack_escape
from bot.models import utc_from_epoch
from bot.slash.commands import Respond, SlashDeps, allowed, say
from bot.store.schema import ALERTS, REDRAWS

log = logging.getLogger(__name__)
ACK, MUTE_VM, MUTE_JOB = "veeam_ack", "veeam_mute_vm", "veeam_mute_job"
BUTTON_MUTE = timedelta(hours=24)


def button_value(body: dict[str, Any]) -> dict[str, Any]:
    """The JSON value of the clicked button ({} when it is not JSON)."""
    action = (body.get("actions") or [{}])[0]
    try:
        value = json.loads(action.get("value") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def register_buttons(app: App, deps: SlashDeps) -> None:
    """Attach the alert buttons to a Bolt app."""

    def handler(kind: str) -> Callable[..., None]:
        def act(ack: Callable[..., None], body: dict[str, Any], respond: Respond) -> None:
            ack()
            user = (body.get("user") or {}).get("id", "")
            channel = (body.get("channel") or {}).get("id", "")
            if not allowed(deps.settings, channel, user):
                respond(
                    text="Sorry, the alert buttons are not enabled for you.",
                    response_type="ephemeral",
                    replace_original=False,
                )
                return
            value = button_value(body)
            now = deps.clock()
            message = body.get("message") or {}
            # the buttons sit in the alert's attachment: its container names the message too
            ts = message.get("ts") or (body.get("container") or {}).get("message_ts", "")
            if kind == ACK:
                text = acknowledge(deps, channel, str(ts), user, now)
            else:
                text = mute_button(deps, kind, value, user, now)
            respond(text=text, response_type="ephemeral", replace_original=False)

        return act

    for kind in (ACK, MUTE_VM, MUTE_JOB):
        app.action(kind)(handler(kind))


def acknowledge(deps: SlashDeps, channel: str, ts: str, user: str, now: datetime) -> str:
    """Record who is on it and redraw the alert with it, once. The record is read and
    written as the one writer of the state: a redraw under way either shows the ack or is
    followed by one that does."""
    with deps.store.lock:
        record = deps.store.records(ALERTS, [ts]).get(ts)
        if record is None:
            return "This alert is no longer in the bot's state; nothing to acknowledge."
        if record.get("ack"):
            by, at = record["ack"]["by"], record["ack"]["at"]
            return f"Already acknowledged by {mention(by)} at {slack_date(utc_from_epoch(at))}."
        record["ack"] = {"by": user, "at": now.timestamp()}
        deps.store.put_records(ALERTS, {ts: record})
        deps.store.put_records(REDRAWS, {ts: {"c": record.get("c") or channel}})
        deps.store.commit()
    if deps.redraw is not None:
        deps.redraw()
    return "Acknowledged: the alert now shows that you are on it."


def mute_button(deps: SlashDeps, kind: str, value: dict[str, Any], user: str, now: datetime) -> str:
    what = "vm" if kind == MUTE_VM else "job"
    name = str(value.get(what) or "")
    server = str(value.get("server") or "")
    if not name:
        return "This alert names nothing to mute."
    book = MuteBook(deps.store)
    for m in book.active(now):
        if (m.kind, m.name.casefold(), m.server.casefold()) == (
            what,
            name.casefold(),
            server.casefold(),
        ):
            return slack_escape(f"Already muted: {m.line()}") + f", by {mention(m.by)}."
    mute = Mute(
        secrets.token_hex(3), what, name, server,
        (now + BUTTON_MUTE).timestamp(), "from the alert's button", user, now.timestamp(),
    )  # fmt: skip
    book.add(mute)
    say(deps, f"{mention(user)} muted {slack_escape(mute.line())}", mute)
    return slack_escape(f"Muted {mute.line()} (id {mute.id}; /veeam unmute {mute.id} ends it).")
