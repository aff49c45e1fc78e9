"""How Slack reaches `/veeam`: Socket Mode (with an app token) or HTTP through waitress.

waitress is a production WSGI server: pure Python, multi-threaded, no C build, and it runs on
Windows as well as Linux, where EM sites usually are. Bolt's `App.start()` is a
single-threaded development server and is not used.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config.settings import Settings
from bot.errors import ConfigError
from bot.slack.codes import AUTH_ERRORS, TRANSPORT_ERRORS, api_error

log = logging.getLogger(__name__)
EVENTS_PATH = "/slack/events"


def check_token(client: WebClient) -> None:
    """auth.test at start: a rejected token stops the bot with one sentence; Slack being
    unreachable does not (alerts wait as pending, /veeam comes up when Slack is back)."""
    try:
        client.auth_test()
    except SlackApiError as exc:
        error = api_error(exc)
        if error in AUTH_ERRORS:
            raise ConfigError([f"SLACK_BOT_TOKEN: Slack rejected it ({error})"]) from None
        log.warning("auth.test failed (%s); continuing", error or exc.response.status_code)
    except TRANSPORT_ERRORS as exc:
        log.warning("cannot reach Slack at start (%s); continuing, alerts wait as pending", exc)


APP_TOKEN_ERRORS = {*AUTH_ERRORS, "not_allowed_token_type"}


def app_token_problem(exc: Exception) -> str | None:
    """The configuration error behind a failed `apps.connections.open`, or None when it may
    pass on a later attempt (network, Slack's own 5xx, rate limit)."""
    if not isinstance(exc, SlackApiError):
        return None
    error = api_error(exc)
    if error not in APP_TOKEN_ERRORS:
        return None
    return (
        f"SLACK_APP_TOKEN: Slack rejected it ({error}); it must be an app-level token "
        "(xapp-…) with the connections:write scope"
    )


def probe_app_token(client: WebClient, app_token: str) -> Exception | None:
    """apps.connections.open, as Socket Mode will call it; its failure, or None."""
    probe = WebClient(token=app_token, base_url=client.base_url, timeout=client.timeout)
    try:
        probe.apps_connections_open(app_token=app_token)
    except (SlackApiError, *TRANSPORT_ERRORS) as exc:
        return exc
    return None


def check_app_token(client: WebClient, app_token: str) -> None:
    """At start: a rejected app token stops the bot with one sentence (exit 78); Slack
    being unreachable does not."""
    exc = probe_app_token(client, app_token)
    if exc is None:
        return
    problem = app_token_problem(exc)
    if problem:
        raise ConfigError([problem]) from None
    log.warning("cannot open a Socket Mode connection at start (%s); retrying", exc)


def bolt_app(settings: Settings, client: WebClient) -> App:
    """A Bolt app with every secret passed explicitly (Bolt's environment fallbacks unused).
    In Socket Mode requests are not signed; a placeholder keeps Bolt from reading the
    environment for a signing secret."""
    return App(
        client=client,
        signing_secret=settings.slack.signing_secret.value or "socket-mode-unused",
        token_verification_enabled=False,  # `check_token` does it, without crashing offline
        ssl_check_enabled=True,
        url_verification_enabled=True,
        process_before_response=False,
        listener_executor=ThreadPoolExecutor(max_workers=4, thread_name_prefix="bolt"),
    )


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


Health = Callable[[], tuple[int, dict[str, Any]]]
# Prometheus's text exposition format, version 0.0.4.
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics(Protocol):
    """What `/metrics` serves (`bot.ops.metrics.Metrics`)."""

    def exposition(self) -> bytes: ...


def wsgi_app(
    app: App | None, health: Health | None = None, metrics: Metrics | None = None
) -> WSGIApp:
    """`POST /slack/events` into Bolt (signatures verified there; not served without `app`),
    `GET /healthz` for probes (200 while polls succeed, 503 with the reason in JSON when they
    do not) and `GET /metrics` for Prometheus."""
    handler = SlackRequestHandler(app, path=EVENTS_PATH) if app is not None else None

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            status, body = health() if health else (200, {"status": "ok"})
            phrase = "200 OK" if status == 200 else "503 Service Unavailable"
            start_response(phrase, [("Content-Type", "application/json")])
            return [json.dumps(body).encode() + b"\n"]
        if path == "/metrics" and metrics is not None:
            start_response("200 OK", [("Content-Type", METRICS_TYPE)])
            return [metrics.exposition()]
        if path == EVENTS_PATH and handler is not None:
            return handler(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return application


class Surface:
    """Starts and stops whichever transport the settings ask for."""

    def __init__(
        self,
        settings: Settings,
        app: App,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - Slack must reach HTTP mode
        on_fatal: Callable[[str], None] | None = None,
        health: Health | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings, self.app, self.host = settings, app, host
        self.health, self.metrics = health, metrics
        # Called with one sentence when /veeam cannot work until the configuration changes
        # (a rejected app token); `run` then stops with exit 78.
        self.on_fatal = on_fatal
        self._socket: SocketModeHandler | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._http_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.port = 0

    def start(self) -> None:
        if self.settings.slack.socket_mode:
            self._socket = SocketModeHandler(
                self.app, app_token=self.settings.slack.app_token.value, web_client=self.app.client
            )
            self._thread = threading.Thread(target=self._connect, name="socket-mode", daemon=True)
            self._thread.start()
            port = self.settings.health_port
            if port is not None:  # health and metrics on a small server of their own
                self._serve(wsgi_app(None, self.health, self.metrics), port, threads=2)
                log.info("health and metrics on http://%s:%d/healthz", self.host, self.port)
            return
        self._serve(wsgi_app(self.app, self.health, self.metrics), self.settings.port, threads=8)
        log.info("/veeam listening on http://%s:%d%s", self.host, self.port, EVENTS_PATH)

    def _serve(self, application: WSGIApp, port: int, *, threads: int) -> None:
        import waitress

        self._server = waitress.create_server(
            application, host=self.host, port=port, threads=threads, ident="veeam-slack-bot"
        )
        self.port = int(self._server.effective_port)
        self._http_thread = threading.Thread(target=self._server.run, name="http", daemon=True)
        self._http_thread.start()

    def _connect(self) -> None:
        """Open the Socket Mode connection, retrying with backoff while Slack is unreachable
        (the client reconnects by itself once it has connected)."""
        delay = 1.0
        while not self._stopping.is_set():
            try:
                assert self._socket is not None
                self._socket.connect()  # type: ignore[no-untyped-call]
            except Exception as exc:  # any failure: keep the bot up, try again later
                problem = app_token_problem(exc)
                if problem and self.on_fatal is not None:
                    self.on_fatal(problem)
                    return
                log.warning("Socket Mode connection failed (%s); retrying in %.0fs", exc, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 60.0)
                continue
            log.info("/veeam connected over Socket Mode")
            return

    def stop(self) -> None:
        self._stopping.set()
        if self._socket is not None:
            self._socket.close()  # type: ignore[no-untyped-call]
        if self._server is not None:
            # Closed by its own loop thread: closing its sockets from this thread while the
            # loop polls them (a SIGTERM just after start) fails that poll with EBADF and a
            # traceback. Run before the loop starts, the request waits in the trigger pipe.
            server = self._server
            try:
                server.trigger.pull_trigger(lambda: _close_all(server))
            except OSError as exc:  # its loop ended and closed the trigger: nothing to close
                log.debug("the HTTP server had stopped already: %s", exc)
        for thread in (self._thread, self._http_thread):
            if thread is not None:
                thread.join(timeout=5)
        if self._server is not None:
            self._server.task_dispatcher.shutdown()


def _close_all(server: Any) -> None:
    """Close a waitress server's listener, connections and trigger (in its loop thread);
    its loop then ends, its map being empty."""
    from waitress import wasyncore

    wasyncore.close_all(server._map, ignore_all=True)
