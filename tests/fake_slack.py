"""A fake Slack Web API on loopback, faithful where the bot depends on it.

- `POST /api/<method>`: bearer token checked; JSON or form bodies; answers shaped like Slack's.
- chat.postMessage validates Block Kit limits (as Slack does: `invalid_blocks`) and stores
  the message with a `ts`; conversations.history returns newest first, honours `oldest`,
  `limit` and cursors, and drops `metadata` unless `include_all_metadata` is true.
- `POST /hooks/<id>`: a response_url; the JSON payloads are recorded.
Faults are plain attributes: `fail_next` (statuses for the next chat.postMessage calls),
`lose_answers` (store the message, then answer 500), `delay` (seconds before answering).
Run standalone: `python -m tests.fake_slack --port 0` prints its base URL.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TOKEN = "xoxb-test-token"
CHANNELS = {"#veeam-alerts": "C0ALERTS", "#veeam-digest": "C0DIGEST", "#ops": "C0OPS"}


@dataclass
class FakeSlack:
    token: str = TOKEN
    channels: dict[str, str] = field(default_factory=lambda: dict(CHANNELS))
    members: set[str] = field(default_factory=lambda: set(CHANNELS.values()))
    fail_next: list[int] = field(default_factory=list)
    retry_after: int = 1
    lose_answers: int = 0
    delay: float = 0.0
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    hooks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _ts: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    @property
    def hook_base(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/"

    def start(self, port: int = 0) -> FakeSlack:
        handler = type("H", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    # ---------------------------------------------------------- inspection
    def posted(self, channel: str = "C0ALERTS") -> list[dict[str, Any]]:
        return list(self.messages.get(channel, []))

    def announced_uids(self, channel: str = "C0ALERTS") -> list[str]:
        """Every session UID announced in the channel, once per message that lists it."""
        out = []
        for m in self.posted(channel):
            meta = m.get("metadata") or {}
            if meta.get("event_type") == "veeam_session_alert":
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
        if self.fail_next:
            status = self.fail_next.pop(0)
            if status == 429:
                return (
                    429,
                    {"ok": False, "error": "ratelimited"},
                    {"Retry-After": str(self.retry_after)},
                )
            return status, {"ok": False, "error": "fatal_error"}, {}
        channel = self.resolve(str(body.get("channel", "")))
        if channel is None:
            return 200, {"ok": False, "error": "channel_not_found"}, {}
        if channel not in self.members:
            return 200, {"ok": False, "error": "not_in_channel"}, {}
        blocks = _json_field(body.get("blocks")) or []
        attachments = _json_field(body.get("attachments")) or []
        problem = block_problems(blocks, attachments, body.get("text"))
        if problem:
            return 200, {"ok": False, "error": "invalid_blocks", "errors": [problem]}, {}
        with self._lock:
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
            self.messages.setdefault(channel, []).append(message)
        if self.lose_answers:
            self.lose_answers -= 1
            return 500, {"ok": False, "error": "internal_error"}, {}
        return 200, {"ok": True, "channel": channel, "ts": ts, "message": message}, {}

    def history(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self.resolve(str(body.get("channel", "")))
        if channel is None or channel not in self.channels.values():
            return {"ok": False, "error": "channel_not_found"}
        if str(body.get("channel")) != channel:  # history wants IDs, not names
            return {"ok": False, "error": "channel_not_found"}
        oldest = float(body.get("oldest") or 0)
        limit = min(int(body.get("limit") or 100), 999)
        start = int(body.get("cursor") or 0)
        with_meta = str(body.get("include_all_metadata", "")).lower() in ("true", "1")
        newest_first = [
            m for m in reversed(self.messages.get(channel, [])) if float(m["ts"]) > oldest
        ]
        page = newest_first[start : start + limit]
        out = [
            dict(m) if with_meta else {k: v for k, v in m.items() if k != "metadata"} for m in page
        ]
        more = start + limit < len(newest_first)
        return {
            "ok": True,
            "messages": out,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }


def _json_field(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value)
    return value


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


class _Handler(BaseHTTPRequestHandler):
    fake: FakeSlack
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> dict[str, Any]:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        parts = urlsplit(self.path)
        params: dict[str, Any] = dict(parse_qsl(parts.query))
        if "json" in (self.headers.get("Content-Type") or ""):
            params.update(json.loads(raw or "{}"))
        else:
            params.update(parse_qsl(raw))
        return params

    def _send(
        self, status: int, doc: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._body()
        fake = self.fake
        if path.startswith("/hooks/"):
            fake.hooks.append((path.rsplit("/", 1)[1], body))
            self._send(200, {"ok": True})
            return
        method = path.rsplit("/", 1)[-1]
        fake.calls.append((method, body))
        auth = self.headers.get("Authorization", "")
        if method != "apps.connections.open" and auth != f"Bearer {fake.token}":
            self._send(200, {"ok": False, "error": "invalid_auth"})
            return
        if method == "auth.test":
            self._send(200, {"ok": True, "user_id": "UBOT", "team_id": "T1", "bot_id": "B1"})
        elif method == "chat.postMessage":
            status, doc, headers = fake.post_message(body)
            if fake.delay:
                time.sleep(fake.delay)
            self._send(status, doc, headers)
        elif method == "conversations.list":
            chans = [{"id": cid, "name": name.lstrip("#")} for name, cid in fake.channels.items()]
            self._send(
                200, {"ok": True, "channels": chans, "response_metadata": {"next_cursor": ""}}
            )
        elif method == "conversations.history":
            self._send(200, fake.history(body))
        else:
            self._send(200, {"ok": True})


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
