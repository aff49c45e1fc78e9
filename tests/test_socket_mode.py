"""Socket Mode end to end: apps.connections.open on the fake Slack hands out a local WebSocket;
a slash-command envelope arrives over it, the bot acks it over the socket and answers on
response_url."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import websockets

from bot.config.render import Renderer
from bot.config.settings import AlertSettings, Secret, Settings, SlackSettings
from bot.emulator.data import SessionStore, generate
from bot.emulator.server import Emulator
from bot.slack.client import web_client
from bot.slack.surface import Surface, bolt_app
from bot.slash.buttons import register_buttons
from bot.slash.commands import SlashDeps, SlashPool, register
from bot.slash.home import register_home
from bot.store.store import Store
from bot.veeam.client import EMClient
from tests.conftest import veeam_settings
from tests.fake_slack import APP_TOKEN, TOKEN, FakeSlack


class FakeSocket:
    """A local WebSocket that plays Slack's Socket Mode: hello, then envelopes; records acks."""

    def __init__(self) -> None:
        self.acks: list[dict[str, Any]] = []
        self.outbox: asyncio.Queue[dict[str, Any]] | None = None
        self.connected = threading.Event()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def main() -> None:
            self.outbox = asyncio.Queue()
            self.server = await websockets.serve(self.handler, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(main(), self.loop)
        ready.wait(5)

    async def handler(self, ws: Any) -> None:
        await ws.send(
            json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}})
        )
        self.connected.set()
        assert self.outbox is not None

        async def pump() -> None:
            while True:
                envelope = await self.outbox.get()  # type: ignore[union-attr]
                await ws.send(json.dumps(envelope))

        sender = asyncio.ensure_future(pump())
        try:
            async for raw in ws:
                self.acks.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        finally:
            sender.cancel()

    def push(self, envelope: dict[str, Any]) -> None:
        assert self.outbox is not None
        self.loop.call_soon_threadsafe(self.outbox.put_nowait, envelope)

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def socket_bot(tmp_path: Path, now: datetime) -> Iterator[tuple[FakeSocket, FakeSlack, Surface]]:
    emu = Emulator(SessionStore(generate(200, now=now, seed=5))).start()
    sock = FakeSocket()
    slack = FakeSlack(ws_url=f"ws://127.0.0.1:{sock.port}/link").start()
    settings = Settings(
        veeam=veeam_settings(emu),
        alerts=AlertSettings(channel="C0ALERTS"),
        slack=SlackSettings(
            bot_token=Secret(TOKEN), app_token=Secret(APP_TOKEN), api_url=slack.url
        ),
        state_path=str(tmp_path / "state.sqlite"),
    )
    em, store, pool = (
        EMClient(settings.veeam),
        Store(settings.state_path, now=now),
        SlashPool(2),
    )
    app = bolt_app(settings, web_client(TOKEN, slack.url))
    deps = SlashDeps(settings, em, store, Renderer(), pool, lambda: datetime.now(UTC))
    register(app, deps)
    register_buttons(app, deps)
    register_home(app, deps)
    surface = Surface(settings, app)
    surface.start()
    yield sock, slack, surface
    surface.stop()
    pool.shutdown(wait=True)
    em.close()
    store.close()
    sock.close()
    slack.stop()
    emu.stop()


def test_slash_command_over_socket_mode(socket_bot: tuple[FakeSocket, FakeSlack, Surface]) -> None:
    sock, slack, surface = socket_bot
    assert surface.port == 0, "no HTTP listener in Socket Mode"
    assert sock.connected.wait(10), "the bot never opened the WebSocket"
    opened = slack.method_calls("apps.connections.open")
    assert len(opened) >= 1
    sock.push(
        {
            "envelope_id": "env-1",
            "type": "slash_commands",
            "accepts_response_payload": True,
            "payload": {
                "token": "legacy",
                "team_id": "T1",
                "channel_id": "C0OPS",
                "user_id": "U1",
                "command": "/veeam",
                "text": "failed since:14d limit:3",
                "api_app_id": "A1",
                "response_url": slack.hook_base + "sock1",
                "trigger_id": "1.2.3",
            },
        }
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(
        a.get("envelope_id") == "env-1" for a in sock.acks
    ):
        time.sleep(0.02)
    assert any(a.get("envelope_id") == "env-1" for a in sock.acks), "no ack over the socket"
    while time.monotonic() < deadline and not slack.hooks:
        time.sleep(0.02)
    name, answer = slack.hooks[0]
    assert name == "sock1"
    assert "showing 3 of" in "".join(b["text"]["text"] for b in answer["blocks"])


def test_an_app_token_revoked_while_running_stops_the_bot(tmp_path: Path, now: datetime) -> None:
    """Slack refuses the app token when Socket Mode (re)connects: no endless retries, the
    bot is told to stop with the sentence naming SLACK_APP_TOKEN."""
    slack = FakeSlack(app_token="xapp-the-new-one").start()
    settings = Settings(
        slack=SlackSettings(
            bot_token=Secret(TOKEN), app_token=Secret(APP_TOKEN), api_url=slack.url
        ),
        state_path=str(tmp_path / "state.sqlite"),
    )
    told: list[str] = []
    stopped = threading.Event()

    def on_fatal(problem: str) -> None:
        told.append(problem)
        stopped.set()

    surface = Surface(settings, bolt_app(settings, web_client(TOKEN, slack.url)), on_fatal=on_fatal)
    surface.start()
    try:
        assert stopped.wait(10)
    finally:
        surface.stop()
        slack.stop()
    assert told == [
        "SLACK_APP_TOKEN: Slack rejected it (invalid_auth); it must be an app-level token "
        "(xapp-…) with the connections:write scope"
    ]
    assert len(slack.method_calls("apps.connections.open")) == 1


def test_alert_buttons_over_socket_mode(socket_bot: tuple[FakeSocket, FakeSlack, Surface]) -> None:
    """A button click arrives as an `interactive` envelope: acked over the socket, answered
    on response_url, acting like in HTTP mode."""
    sock, slack, _surface = socket_bot
    assert sock.connected.wait(10)
    value = json.dumps({"job": "Replication Job 2", "server": "enterprise06.tech.local"})
    sock.push(
        {
            "envelope_id": "env-b1",
            "type": "interactive",
            "accepts_response_payload": False,
            "payload": {
                "type": "block_actions",
                "team": {"id": "T1"},
                "user": {"id": "U0ALICE"},
                "api_app_id": "A1",
                "channel": {"id": "C0ALERTS"},
                "container": {"type": "message", "message_ts": "1.000001"},
                "message": {"ts": "1.000001", "text": "alert", "blocks": []},
                "response_url": slack.hook_base + "btn1",
                "trigger_id": "1.2.3",
                "actions": [
                    {
                        "action_id": "veeam_mute_job",
                        "block_id": "veeam_buttons",
                        "type": "button",
                        "value": value,
                        "action_ts": "1.1",
                    }
                ],
            },
        }
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not slack.hooks:
        time.sleep(0.02)
    assert any(a.get("envelope_id") == "env-b1" for a in sock.acks), "no ack over the socket"
    name, answer = slack.hooks[0]
    assert name == "btn1"
    assert answer["text"].startswith("Muted job Replication Job 2 on enterprise06.tech.local")


def test_the_home_tab_over_socket_mode(socket_bot: tuple[FakeSocket, FakeSlack, Surface]) -> None:
    """app_home_opened arrives as an `events_api` envelope; the Home tab is published."""
    sock, slack, _surface = socket_bot
    assert sock.connected.wait(10)
    sock.push(
        {
            "envelope_id": "env-h1",
            "type": "events_api",
            "accepts_response_payload": False,
            "payload": {
                "type": "event_callback", "team_id": "T1", "api_app_id": "A1",
                "event": {"type": "app_home_opened", "user": "U0ALICE", "channel": "D1",
                          "tab": "home", "event_ts": "1.1"},
                "event_id": "Ev1", "event_time": 1,
            },
        }
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "U0ALICE" not in slack.views:
        time.sleep(0.02)
    assert any(a.get("envelope_id") == "env-h1" for a in sock.acks), "no ack over the socket"
    view = slack.views["U0ALICE"]
    assert view["type"] == "home" and view["blocks"][0]["text"]["text"] == "Veeam backups"
