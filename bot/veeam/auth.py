"""EM logon as an `httpx.Auth` flow: log on, send `X-RestSvcSessionId`, re-logon once on 401."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Generator
from urllib.parse import quote, urlsplit

import httpx

from bot.config.settings import Secret
from bot.errors import AuthError, EMUnavailable, SourceError
from bot.veeam.parse import parse_logon

log = logging.getLogger(__name__)
TOKEN_HEADER = "X-RestSvcSessionId"  # noqa: S105 - a header name, not a secret


class EMSessionAuth(httpx.Auth):
    """Holds one EM logon session and renews it when EM answers 401."""

    requires_response_body = True

    def __init__(self, base_url: str, username: str, password: Secret) -> None:
        self._base = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._lock = threading.Lock()
        self.token: str | None = None
        self.logout_path: str | None = None
        self.logons = 0

    def __repr__(self) -> str:
        return f"EMSessionAuth(user={self._username!r}, password=<SECRET>)"

    def _logon_request(self) -> httpx.Request:
        raw = f"{self._username}:{self._password.value}".encode()
        basic = "Basic " + base64.b64encode(raw).decode("ascii")
        return httpx.Request(
            "POST",
            f"{self._base}/api/sessionMngr/?v=latest",
            headers={"Authorization": basic, "Content-Length": "0"},
        )

    def _accept_logon(self, response: httpx.Response) -> None:
        if response.status_code in (401, 403):
            raise AuthError(
                f"EM refused the logon of {self._username!r}: wrong username or password, "
                f"or the account lacks a Portal User role (HTTP {response.status_code})"
            )
        if response.status_code >= 500:
            raise EMUnavailable(f"EM logon failed with HTTP {response.status_code}")
        if response.status_code not in (200, 201):
            raise SourceError(f"EM logon failed with HTTP {response.status_code}")
        token = response.headers.get(TOKEN_HEADER)  # httpx headers are case-insensitive
        if not token:
            raise SourceError(f"EM logon answered without a {TOKEN_HEADER} header")
        self.token = token
        self.logout_path = logout_path(response.content, response.headers.get("Location", ""))
        self.logons += 1
        log.info("logged on to EM as %s", self._username)

    def _logon(self) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield self._logon_request()
        self._accept_logon(response)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        with self._lock:
            if self.token is None:
                yield from self._logon()
            used = self.token
        assert used is not None
        request.headers[TOKEN_HEADER] = used
        response = yield request
        if response.status_code != 401:
            return
        log.info("EM session expired; logging on again")
        with self._lock:
            if self.token == used:
                self.token = None
                yield from self._logon()
            fresh = self.token
        assert fresh is not None
        request.headers[TOKEN_HEADER] = fresh
        yield request

    def logout_request(self) -> httpx.Request | None:
        """The DELETE that ends the EM session, or None when not logged on."""
        if not self.token or not self.logout_path:
            return None
        request = httpx.Request("DELETE", f"{self._base}{self.logout_path}")
        request.headers[TOKEN_HEADER] = self.token
        self.token = self.logout_path = None
        return request


def logout_path(body: bytes, location: str) -> str | None:
    """Where to DELETE the logon session, as a path on the configured EM URL: the body's
    `Rel="Delete"` link (EM's documented answer), else its SessionId, else a `Location`
    header. Only the path is kept: EM names itself by a host name the bot may not resolve."""
    session_id, delete = parse_logon(body)
    path = urlsplit(delete).path if delete else ""
    if "/logonsessions/" in path.lower():
        return path
    if session_id:
        return f"/api/logonSessions/{quote(session_id, safe='')}"
    path = urlsplit(location).path if location else ""
    return path if "/logonsessions/" in path.lower() else None
