"""A fake Slack Web API on loopback, faithful where the bot depends on it.

- `POST /api/<method>`: bearer token checked; JSON or form bodies; answers shaped like Slack's.
- chat.postMessage validates Block Kit limits (as Slack does: `invalid_blocks`, and
  `msg_blocks_too_long` past about 13,000 characters of text in all) and stores
  the message with a `ts`; conversations.history returns newest first, honours `oldest`,
  `limit` and cursors, and drops `metadata` unless `include_all_metadata` is true.
- Threads: a post with `thread_ts` is a reply (in the channel too with `reply_broadcast`);
  conversations.replies returns the parent and its replies; chat.update edits a message.
- chat.delete (`delete()` for a test's person): a message without replies is gone, so a
  reply to it answers `thread_not_found` and an update `message_not_found`; one with replies
  stays as a tombstone that keeps its thread and cannot be updated.
- `POST /hooks/<id>`: a response_url; the JSON payloads are recorded.
Faults are plain attributes: `fail_next` (statuses for the next chat.postMessage calls; 0
answers normally),
`lose_answers` (store the message, then answer 500), `fail_rate` and `lose_rate` (the same at
random, seeded), `read_fail_rate` (reads answered 500 at random), `delay` (seconds before
answering).
`stored` is set each time a chat.postMessage is stored (tests clear it and wait on it).
Run standalone: `python -m tests.fake_slack --port 0` prints its base URL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import socket
import threading
import time
import traceback
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from slack_sdk.signature import SignatureVerifier

TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"
CONFIG_TOKEN = "xoxe.xoxp-test-config"
# Slack refuses a message whose texts add up to more than about 13,000 characters with
# msg_blocks_too_long (reports: between 13,172 and 13,297), blocks in attachments included.
MESSAGE_TEXT_LIMIT = 13172

CHANNELS = {"#veeam-alerts": "C0ALERTS", "#veeam-digest": "C0DIGEST", "#ops": "C0OPS"}


@dataclass
class FakeSlack:
    token: str = TOKEN
    app_token: str = APP_TOKEN
    ws_url: str = ""  # what apps.connections.open hands out (Socket Mode tests)
    channels: dict[str, str] = field(default_factory=lambda: dict(CHANNELS))
    members: set[str] = field(default_factory=lambda: set(CHANNELS.values()))
    archived: set[str] = field(default_factory=set)  # channel IDs: posts answer is_archived
    fail_next: list[int] = field(default_factory=list)
    retry_after: int = 1
    lose_answers: int = 0
    text_limit: int = MESSAGE_TEXT_LIMIT  # msg_blocks_too_long past this many characters
    fail_rate: float = 0.0  # share of chat.postMessage calls answered 500, not stored
    lose_rate: float = 0.0  # share of the rest stored but answered 500
    read_fail_rate: float = 0.0  # share of reads (conversations.*, auth.test) answered 500
    fail_reads: list[int] = field(default_factory=list)  # statuses for the next reads
    faults: random.Random = field(default_factory=lambda: random.Random(0))
    delay: float = 0.0
    scopes: set[str] = field(default_factory=lambda: {"chat:write", "channels:history"})
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    replies: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    updates: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)  # Home tabs, by user
    # what apps.manifest.export answers (the app's configuration, as slack/manifest.yml)
    manifest: dict[str, Any] = field(default_factory=lambda: {
        "features": {"app_home": {"home_tab_enabled": True}},
        "settings": {"event_subscriptions": {"bot_events": ["app_home_opened"]}},
    })  # fmt: skip
    fail_updates: list[int] = field(default_factory=list)  # statuses for the next chat.update
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    hooks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    stored: threading.Event = field(default_factory=threading.Event)
    _ts: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: _Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.port}/api/"

    @property
    def hook_base(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.port}/hooks/"

    def start(self, port: int = 0) -> FakeSlack:
        self._server = _Server(self, port)
        return self

    def stop(self) -> None:
        if self._server:
            self._server.close()

    def dispatch(
        self, verb: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """One request → (status, JSON document, extra headers)."""
        parts = urlsplit(target)
        body: dict[str, Any] = dict(parse_qsl(parts.query))
        text = raw.decode()
        if "json" in headers.get("content-type", ""):
            body.update(json.loads(text or "{}"))
        else:
            body.update(parse_qsl(text))
        path = parts.path
        if path.startswith("/hooks/"):
            self.hooks.append((path.rsplit("/", 1)[1], body))
            return 200, {"ok": True}, {}
        method = path.rsplit("/", 1)[-1]
        self.calls.append((method, body))
        if method.startswith("apps."):  # app-level and configuration tokens, not the bot's
            return self.app_method(method, headers)
        if headers.get("authorization", "") != f"Bearer {self.token}":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if method == "chat.postMessage":
            return self.post_message(body)  # the server holds the answer back by `delay`
        if method == "chat.update":
            return self.update_message(body)
        if method == "chat.delete":
            return 200, self.delete_message(body), {}
        reads = method.startswith("conversations.") or method == "auth.test"
        if reads and self.fail_reads:
            return self.fail_reads.pop(0), {"ok": False, "error": "fatal_error"}, {}
        if reads and self.read_fail_rate and self.faults.random() < self.read_fail_rate:
            return 500, {"ok": False, "error": "fatal_error"}, {}
        answer = {
            "auth.test": lambda: {
                "ok": True,
                "user": "veeam",
                "user_id": "UBOT",
                "team": "Example",
                "team_id": "T1",
                "bot_id": "B1",
            },
            "conversations.list": self.channel_list,
            "conversations.history": lambda: self.history(body),
            "conversations.info": lambda: self.channel_info(body),
            "conversations.replies": lambda: self.thread_replies(body),
            "views.publish": lambda: self.publish_view(body),
            "chat.getPermalink": lambda: self.permalink(body),
        }.get(method, lambda: {"ok": True})
        return 200, answer(), {}

    def app_method(
        self, method: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """apps.connections.open (an app-level token) and apps.manifest.export (an app
        configuration token)."""
        auth = headers.get("authorization", "")
        if method == "apps.manifest.export":
            if auth != f"Bearer {CONFIG_TOKEN}":
                return 200, {"ok": False, "error": "invalid_auth"}, {}
            return 200, {"ok": True, "manifest": self.manifest}, {}
        if auth.startswith("Bearer xoxb-"):
            return 200, {"ok": False, "error": "not_allowed_token_type"}, {}
        if auth != f"Bearer {self.app_token}":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        return 200, {"ok": True, "url": self.ws_url}, {}

    def publish_view(self, body: dict[str, Any]) -> dict[str, Any]:
        """views.publish: a Home tab for one user, at most 100 blocks, kept by user ID."""
        view = _json_field(body.get("view")) or {}
        user = str(body.get("user_id", ""))
        if not user or view.get("type") != "home":
            return {"ok": False, "error": "invalid_arguments"}
        if len(view.get("blocks", [])) > 100 or block_problems(view.get("blocks", []), [], "x"):
            return {"ok": False, "error": "invalid_blocks"}
        with self._lock:
            self.views[user] = view
        return {"ok": True, "view": {"id": "V1", **view}}

    def permalink(self, body: dict[str, Any]) -> dict[str, Any]:
        """chat.getPermalink of a message the fake holds."""
        channel = self.resolve(str(body.get("channel", ""))) or ""
        ts = str(body.get("message_ts", ""))
        if self._find(channel, ts) is None:
            return {"ok": False, "error": "message_not_found"}
        link = f"https://example.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        return {"ok": True, "channel": channel, "permalink": link}

    def channel_info(self, body: dict[str, Any]) -> dict[str, Any]:
        """conversations.info: a channel by ID, with whether the bot is a member."""
        cid = str(body.get("channel", ""))
        names = {v: k.lstrip("#") for k, v in self.channels.items()}
        if cid not in names:
            return {"ok": False, "error": "channel_not_found"}
        return {
            "ok": True,
            "channel": {
                "id": cid,
                "name": names[cid],
                "is_channel": True,
                "is_private": False,
                "is_archived": cid in self.archived,
                "is_member": cid in self.members,
            },
        }

    def channel_list(self) -> dict[str, Any]:
        chans = [{"id": cid, "name": name.lstrip("#")} for name, cid in self.channels.items()]
        return {"ok": True, "channels": chans, "response_metadata": {"next_cursor": ""}}

    # ---------------------------------------------------------- inspection
    def posted(self, channel: str = "C0ALERTS") -> list[dict[str, Any]]:
        return list(self.messages.get(channel, []))

    def announced_uids(self, channel: str = "C0ALERTS") -> list[str]:
        """Every session UID announced in the channel or in its threads, once per message
        that lists it (a reply also shown in the channel counts once)."""
        out = []
        replies = [m for (c, _), msgs in self.replies.items() if c == channel for m in msgs]
        for m in self.posted(channel) + replies:
            meta = m.get("metadata") or {}
            if m.get("subtype") != "thread_broadcast" and meta.get("event_type") == (
                "veeam_session_alert"
            ):
                out += [s["uid"] for s in meta["event_payload"]["sessions"]]
        return out

    def method_calls(self, method: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == method]

    # ------------------------------------------------------------- methods
    def resolve(self, channel: str) -> str | None:
        if channel in self.channels.values():
            return channel
        return self.channels.get(channel) or self.channels.get("#" + channel)

    def post_message(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        status = self.fail_next.pop(0) if self.fail_next else 0  # 0: answer normally
        if status:
            if status == 429:
                return (
                    429,
                    {"ok": False, "error": "ratelimited"},
                    {"Retry-After": str(self.retry_after)},
                )
            return status, {"ok": False, "error": "fatal_error"}, {}
        if self.fail_rate and self.faults.random() < self.fail_rate:
            return 500, {"ok": False, "error": "fatal_error"}, {}
        channel = self.resolve(str(body.get("channel", "")))
        if channel is None:
            return 200, {"ok": False, "error": "channel_not_found"}, {}
        if channel in self.archived:
            return 200, {"ok": False, "error": "is_archived"}, {}
        if channel not in self.members:
            return 200, {"ok": False, "error": "not_in_channel"}, {}
        blocks = _json_field(body.get("blocks")) or []
        attachments = _json_field(body.get("attachments")) or []
        error = content_error(blocks, attachments, body.get("text"), self.text_limit)
        if error:
            problem = block_problems(blocks, attachments, body.get("text")) or error
            return 200, {"ok": False, "error": error, "errors": [problem]}, {}
        thread_ts = str(body.get("thread_ts") or "")
        with self._lock:
            parent = self._find(channel, thread_ts) if thread_ts else None
            if thread_ts and parent is None:
                return 200, {"ok": False, "error": "thread_not_found"}, {}
            self._ts = max(time.time(), self._ts + 0.000001)  # Slack ts: epoch seconds, unique
            ts = f"{self._ts:.6f}"
            message = {
                "type": "message",
                "ts": ts,
                "text": body.get("text", ""),
                "blocks": blocks,
                "attachments": attachments,
                "metadata": _json_field(body.get("metadata")),
            }
            if parent is not None:
                message["thread_ts"] = thread_ts
                parent["thread_ts"] = thread_ts
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                self.replies.setdefault((channel, thread_ts), []).append(message)
                if str(body.get("reply_broadcast", "")).lower() in ("true", "1"):
                    broadcast = dict(message, subtype="thread_broadcast")
                    self.messages.setdefault(channel, []).append(broadcast)
            else:
                self.messages.setdefault(channel, []).append(message)
        self.stored.set()
        if self.lose_answers or (self.lose_rate and self.faults.random() < self.lose_rate):
            self.lose_answers = max(0, self.lose_answers - 1)
            return 500, {"ok": False, "error": "internal_error"}, {}
        return 200, {"ok": True, "channel": channel, "ts": ts, "message": message}, {}

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The top-level message `ts` in `channel`, or None."""
        return next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)

    def update_message(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """chat.update: replaces the text, blocks and attachments of a message (top-level or
        a reply); validated like a post."""
        if self.fail_updates:
            status = self.fail_updates.pop(0)
            if status == 429:
                headers = {"Retry-After": str(self.retry_after)}
                return 429, {"ok": False, "error": "ratelimited"}, headers
            return status, {"ok": False, "error": "fatal_error"}, {}
        channel = self.resolve(str(body.get("channel", "")))
        if channel is None or str(body.get("channel")) != channel:
            return 200, {"ok": False, "error": "channel_not_found"}, {}
        blocks = _json_field(body.get("blocks")) or []
        attachments = _json_field(body.get("attachments")) or []
        error = content_error(blocks, attachments, body.get("text"), self.text_limit)
        if error:
            return 200, {"ok": False, "error": error}, {}
        ts = str(body.get("ts", ""))
        with self._lock:
            target = self._find(channel, ts)
            if target is None:
                thread = (m for r in self.replies.values() for m in r if m["ts"] == ts)
                target = next(thread, None)
            if target is None or target.get("subtype") == "tombstone":
                return 200, {"ok": False, "error": "message_not_found"}, {}
            target.update(text=body.get("text", ""), blocks=blocks, attachments=attachments)
            if body.get("metadata"):
                target["metadata"] = _json_field(body.get("metadata"))
            target["edited"] = {"user": "UBOT", "ts": f"{time.time():.6f}"}
            self.updates.append((channel, ts, dict(target)))
        return 200, {"ok": True, "channel": channel, "ts": ts, "text": target["text"]}, {}

    def delete_message(self, body: dict[str, Any]) -> dict[str, Any]:
        """chat.delete, as a person deleting a message: one without replies is gone; one
        with replies stays as a tombstone ("This message was deleted.") holding its thread,
        which can no longer be updated."""
        channel = self.resolve(str(body.get("channel", "")))
        ts = str(body.get("ts", ""))
        with self._lock:
            target = self._find(channel or "", ts)
            if channel is None or target is None:
                return {"ok": False, "error": "message_not_found"}
            if self.replies.get((channel, ts)):
                target.clear()
                target.update(
                    type="message",
                    subtype="tombstone",
                    ts=ts,
                    thread_ts=ts,
                    text="This message was deleted.",
                    blocks=[],
                    attachments=[],
                    metadata=None,
                )
            else:
                self.messages[channel].remove(target)
        return {"ok": True, "channel": channel, "ts": ts}

    def delete(self, ts: str, channel: str = "C0ALERTS") -> None:
        """A person deletes the message `ts` (as chat.delete does)."""
        answer = self.delete_message({"channel": channel, "ts": ts})
        assert answer["ok"], answer

    def thread_replies(self, body: dict[str, Any]) -> dict[str, Any]:
        """conversations.replies: the parent first, then its replies, oldest first."""
        channel = self.resolve(str(body.get("channel", "")))
        if channel is None or str(body.get("channel")) != channel:
            return {"ok": False, "error": "channel_not_found"}
        ts = str(body.get("ts", ""))
        parent = self._find(channel, ts)
        if parent is None:
            return {"ok": False, "error": "thread_not_found"}
        everything = [parent, *self.replies.get((channel, ts), [])]
        oldest = float(body.get("oldest") or 0)
        everything = [m for m in everything if m is parent or float(m["ts"]) > oldest]
        return _page(everything, body, 1000)

    def thread(self, ts: str, channel: str = "C0ALERTS") -> list[dict[str, Any]]:
        """The replies in a thread, oldest first."""
        return list(self.replies.get((channel, ts), []))

    def history(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self.resolve(str(body.get("channel", "")))
        if channel is None or channel not in self.channels.values():
            return {"ok": False, "error": "channel_not_found"}
        if str(body.get("channel")) != channel:  # history wants IDs, not names
            return {"ok": False, "error": "channel_not_found"}
        if "channels:history" not in self.scopes:
            return {"ok": False, "error": "missing_scope", "needed": "channels:history"}
        if channel not in self.members:
            return {"ok": False, "error": "not_in_channel"}
        oldest = float(body.get("oldest") or 0)
        newest_first = [
            m for m in reversed(self.messages.get(channel, [])) if float(m["ts"]) > oldest
        ]
        return _page(newest_first, body, 999)


def _page(messages: list[dict[str, Any]], body: dict[str, Any], most: int) -> dict[str, Any]:
    """One page of a conversations.* answer: `limit` (at most `most`) messages from the
    `cursor`, metadata only with `include_all_metadata`."""
    limit = min(int(body.get("limit") or 100), most)
    start = int(body.get("cursor") or 0)
    with_meta = str(body.get("include_all_metadata", "")).lower() in ("true", "1")
    out = [
        dict(m) if with_meta else {k: v for k, v in m.items() if k != "metadata"}
        for m in messages[start : start + limit]
    ]
    more = start + limit < len(messages)
    return {
        "ok": True,
        "messages": out,
        "has_more": more,
        "response_metadata": {"next_cursor": str(start + limit) if more else ""},
    }


def signed_command(
    url: str, secret: str, fields: dict[str, str], *, age: int = 0
) -> urllib.request.Request:
    """A slash command as Slack sends it: form-encoded, signed with the signing secret
    (`v0=` HMAC-SHA256 of `v0:<timestamp>:<body>`), `age` seconds old."""
    body = urllib.parse.urlencode({"command": "/veeam", "team_id": "T1", **fields})
    return _signed(url, secret, body, "application/x-www-form-urlencoded", age)


def _signed(url: str, secret: str, body: str, ctype: str, age: int = 0) -> urllib.request.Request:
    """A request signed as Slack signs them (`v0=` HMAC-SHA256 of `v0:<timestamp>:<body>`)."""
    ts = str(int(time.time()) - age)
    sig = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    headers = {"Content-Type": ctype, "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}
    return urllib.request.Request(url, data=body.encode(), method="POST", headers=headers)


def signed_action(url: str, secret: str, payload: dict[str, Any]) -> urllib.request.Request:
    """An interactivity request (a button click) as Slack sends it: `payload=<JSON>`,
    form-encoded and signed."""
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    return _signed(url, secret, body, "application/x-www-form-urlencoded")


def signed_event(url: str, secret: str, event: dict[str, Any]) -> urllib.request.Request:
    """An Events API request as Slack sends it: JSON, signed."""
    envelope = {"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event": event,
                "event_id": "Ev1", "event_time": int(time.time())}  # fmt: skip
    return _signed(url, secret, json.dumps(envelope), "application/json")


def _json_field(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value)
    return value


def _texts(obj: Any) -> list[str]:
    if isinstance(obj, list):
        return [t for item in obj for t in _texts(item)]
    if not isinstance(obj, dict):
        return []
    out = [v for k, v in obj.items() if k in ("text", "fallback") and isinstance(v, str)]
    return out + [t for v in obj.values() if isinstance(v, dict | list) for t in _texts(v)]


def content_error(
    blocks: list[Any], attachments: list[Any], text: Any, limit: int = MESSAGE_TEXT_LIMIT
) -> str:
    """The error code Slack answers for a message it will not take, or ""."""
    if sum(len(t) for t in _texts(blocks) + _texts(attachments)) > limit:
        return "msg_blocks_too_long"
    if len(str(text or "")) > 40000:
        return "msg_too_long"
    return "invalid_blocks" if block_problems(blocks, attachments, text) else ""


def block_problems(blocks: list[Any], attachments: list[Any], text: Any) -> str:
    """The first Block Kit limit a message breaks, as Slack would reject it."""
    every = list(blocks)
    for a in attachments:
        every += a.get("blocks", [])
    if len(every) > 50:
        return f"too many blocks ({len(every)})"
    if not text and not every:
        return "no_text"
    for b in every:
        t = b.get("type")
        if t == "section" and len(b["text"]["text"]) > 3000:
            return "section text longer than 3000"
        if t == "header" and (len(b["text"]["text"]) > 150 or b["text"]["type"] != "plain_text"):
            return "bad header"
        if t == "context" and len(b.get("elements", [])) > 10:
            return "too many context elements"
    return ""


class _Server:
    """A small HTTP/1.1 server in its own thread, so that the fake, not being the bottleneck,
    lets benchmarks measure the bot. urllib (slack-sdk, response_url posts) sends one
    request per connection; the accepting thread answers those inline, with no event loop
    or thread per connection. A connection kept open, or an answer held back by `delay`,
    gets a thread of its own, so it never holds up other clients."""

    def __init__(self, fake: FakeSlack, port: int) -> None:
        self.fake = fake
        self.listener = socket.create_server(("127.0.0.1", port), backlog=512)
        self.port = int(self.listener.getsockname()[1])
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.closing = False
        self.thread = threading.Thread(target=self.accept_loop, daemon=True)
        self.thread.start()

    def accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            if self.closing:
                sock.close()
                return
            sock.settimeout(10)  # a client that connects and goes quiet holds nothing long
            with self.lock:
                self.open.add(sock)
            _Connection(self, sock).serve(inline=True)

    def forget(self, sock: socket.socket) -> None:
        with self.lock:
            self.open.discard(sock)
        sock.close()

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(OSError):  # wake the accepting thread
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        self.thread.join(5)
        self.listener.close()
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Connection:
    """One client connection: requests in order; a chat.postMessage is answered after the
    fake's `delay` (the message is stored first)."""

    def __init__(self, server: _Server, sock: socket.socket) -> None:
        self.server, self.sock = server, sock
        self.buffer = b""

    def serve(self, *, inline: bool) -> None:
        try:
            while (request := self.read()) is not None:
                verb, target, headers, body = request
                fake = self.server.fake
                status, doc, extra = fake.dispatch(verb, target, headers, body)
                close = headers.get("connection", "").lower() == "close"
                delay = fake.delay if target.endswith("/chat.postMessage") else 0.0
                if inline and (delay or not close):
                    thread = threading.Thread(
                        target=self.finish, args=(status, doc, extra, close, delay), daemon=True
                    )
                    thread.start()
                    return
                if not self.answer(status, doc, extra, close, delay):
                    break
        except (OSError, ValueError):
            pass  # a client that vanished (killed mid-request) or a garbled request
        except Exception:
            traceback.print_exc()  # a bug in the fake: show it, drop only this connection
        self.server.forget(self.sock)

    def finish(
        self, status: int, doc: dict[str, Any], extra: dict[str, str], close: bool, delay: float
    ) -> None:
        try:
            if self.answer(status, doc, extra, close, delay):
                self.serve(inline=False)
                return
        except OSError:
            pass  # the client gave up (timeout, or killed) while the answer was held back
        self.server.forget(self.sock)

    def answer(
        self, status: int, doc: dict[str, Any], extra: dict[str, str], close: bool, delay: float
    ) -> bool:
        """Send one answer; False when the connection is to be closed."""
        if delay:
            time.sleep(delay)
        data = json.dumps(doc).encode()
        head = [
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}",
            "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(data)}",
            "Connection: close" if close else "Connection: keep-alive",
        ]
        head += [f"{k}: {v}" for k, v in extra.items()]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        return not close

    def read(self) -> tuple[str, str, dict[str, str], bytes] | None:
        """The next whole request, or None when the client has closed the connection."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if not self.fill():
                return None
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for h in lines[1:]:
            name, _, value = h.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length") or 0)
        while len(self.buffer) < end + 4 + size:
            if not self.fill():
                return None
        body = self.buffer[end + 4 : end + 4 + size]
        self.buffer = self.buffer[end + 4 + size :]
        verb, target, _ = lines[0].split(" ", 2)
        return verb, target, headers, body

    def fill(self) -> bool:
        chunk = self.sock.recv(262144)
        self.buffer += chunk
        return bool(chunk)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    fake = FakeSlack(delay=args.delay).start(args.port)
    print(fake.url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
