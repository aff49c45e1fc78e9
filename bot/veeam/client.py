"""The EM query client: paged `/api/query` walks as generators, clear errors."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType
from typing import TypeVar

import httpx
import stamina
from stamina.instrumentation import RetryDetails

from bot.config.settings import VeeamSettings
from bot.errors import EMRejected, EMUnavailable, SourceError
from bot.models import Job, JobSession, Page, TaskSession
from bot.veeam.auth import EMSessionAuth
from bot.veeam.inventory import parse_jobs
from bot.veeam.jobsessions import parse_job_sessions
from bot.veeam.parse import parse_page
from bot.veeam.tasks import Task, parse_task

log = logging.getLogger(__name__)
ACCEPT = {"xml": "application/xml", "json": "application/json"}
T = TypeVar("T")


def _transient(exc: Exception) -> bool:
    return isinstance(exc, SourceError) and exc.transient


def log_retry(details: RetryDetails) -> None:
    """stamina's retry hook: one readable line per retry (its own says only
    "stamina.retry_scheduled"). Installed by the CLI entry point."""
    log.warning("%s; retry %d in %.1fs", details.caused_by, details.retry_num, details.wait_for)


def tls_verify(setting: bool | str) -> bool | ssl.SSLContext:
    """`VEEAM_VERIFY_TLS` → httpx `verify`: True, False, or a context trusting a CA bundle."""
    if isinstance(setting, str):
        return ssl.create_default_context(cafile=setting)
    return setting


class EMClient:
    """A thread-safe EM client. Build one per process; close it to log out."""

    def __init__(
        self,
        settings: VeeamSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        observe: Callable[[float], None] | None = None,
    ):
        self.settings = settings
        self.observe = observe  # called with each request's seconds (metrics)
        self.base_url = settings.url
        if settings.verify_tls is False:
            log.warning(
                "TLS verification of Enterprise Manager at %s is off (verify_tls = false): "
                "anyone on the network path can read the EM password and the alerts. Set "
                "VEEAM_VERIFY_TLS to the path of the CA bundle (PEM) that signed EM's "
                "certificate instead",
                settings.url,
            )
        self.auth = EMSessionAuth(settings.url, settings.username, settings.password)
        timeout = settings.timeout.total_seconds()
        self._http = httpx.Client(
            base_url=settings.url,
            auth=self.auth,
            verify=tls_verify(settings.verify_tls),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Accept": ACCEPT[settings.format], "User-Agent": "veeam-slack-bot"},
            transport=transport,
            # EM prefers its session cookie over the header; a stale cookie would defeat the
            # re-logon on 401, so the client keeps no cookies and sends only the header.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )
        self.requests = 0
        self.retries = 0  # requests sent again after a transient failure
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EMClient(url={self.base_url!r}, user={self.settings.username!r})"

    def __enter__(self) -> EMClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Log out of EM (best effort, retried like any idempotent request) and close the
        connection pool."""
        try:
            self.logout()
        except SourceError as exc:
            log.info("EM logout failed: %s", exc)
        self._http.close()

    def logout(self) -> bool:
        """End the EM logon session (retried like any idempotent request); False when there
        was none. Raises SourceError."""
        request = self.auth.logout_request()
        if request is None:
            return False
        self._retried(lambda: self._send_logout(request))
        return True

    def _send_logout(self, request: httpx.Request) -> None:
        try:
            response = self._http.send(request, auth=None)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 500:
            raise EMUnavailable(f"EM logout failed with HTTP {response.status_code}")

    def _retried(self, call: Callable[[], T]) -> T:
        """Run one idempotent request; on a transient failure (5xx, connection, timeout) run
        it again with jittered exponential backoff, `attempts` times in all."""
        backoff = self.settings.backoff.total_seconds()
        for attempt in stamina.retry_context(
            on=_transient,
            attempts=self.settings.attempts,
            timeout=None,
            wait_initial=backoff,
            wait_max=max(backoff, 30.0),
            wait_jitter=backoff,
        ):
            with attempt:
                if attempt.num > 1:
                    with self._count_lock:
                        self.retries += 1
                return call()
        raise AssertionError("unreachable")  # stamina re-raises the last failure

    def _get(self, path: str, params: dict[str, str | int]) -> bytes:
        return self._retried(lambda: self._get_once(path, params))

    def _get_once(self, path: str, params: dict[str, str | int]) -> bytes:
        self.requests += 1
        started = time.monotonic()
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        finally:
            if self.observe is not None:
                self.observe(time.monotonic() - started)
        if response.status_code >= 400:
            self._raise_for(response)
        return response.content

    def _transport_error(self, exc: httpx.HTTPError) -> SourceError:
        """One sentence for a request that got no HTTP answer. A certificate EM's CA bundle
        does not vouch for is final; anything else may pass on the next attempt."""
        text = str(exc)
        if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in text:
            return SourceError(
                f"EM's TLS certificate at {self.base_url} is not trusted; set VEEAM_VERIFY_TLS "
                "to the path of the CA bundle (or certificate) that signed it"
            )
        if isinstance(exc, httpx.ConnectError):
            return EMUnavailable(
                f"cannot reach EM at {self.base_url}: {text or type(exc).__name__}"
            )
        if isinstance(exc, httpx.TimeoutException):
            seconds = self.settings.timeout.total_seconds()
            return EMUnavailable(f"EM at {self.base_url} did not answer within {seconds:g}s")
        return EMUnavailable(f"EM at {self.base_url} failed: {text or type(exc).__name__}")

    def _raise_for(self, response: httpx.Response) -> None:
        try:
            parse_page(response.content)
        except EMRejected as exc:
            raise EMRejected(exc.em_message, response.status_code) from None
        except SourceError:
            pass
        raise EMRejected(f"{response.reason_phrase or 'error'}", response.status_code)

    def page(
        self,
        type_: str,
        filter_: str,
        *,
        page: int,
        size: int,
        sort_asc: str = "",
        sort_desc: str = "",
    ) -> tuple[list[TaskSession], Page | None]:
        """One page of a query."""
        return parse_page(
            self._page_body(type_, filter_, page, size, sort_asc=sort_asc, sort_desc=sort_desc)
        )

    def _page_body(
        self, type_: str, filter_: str, page: int, size: int, *, sort_asc: str, sort_desc: str
    ) -> bytes:
        params: dict[str, str | int] = {"type": type_, "format": "Entities"}
        if sort_asc:
            params["sortAsc"] = sort_asc
        if sort_desc:
            params["sortDesc"] = sort_desc
        params["pageSize"] = size
        params["page"] = page
        if filter_:
            params["filter"] = filter_
        return self._get("/api/query", params)

    def query(
        self,
        type_: str,
        filter_: str = "",
        *,
        sort_asc: str = "",
        sort_desc: str = "",
        page_size: int | None = None,
    ) -> Iterator[TaskSession]:
        """Yield every matching task session, walking pages while PageNum < PagesCount.

        The next page is requested as soon as the page count is known: while this page is
        parsed (from the second page on) and while its sessions are consumed. One request is
        in flight at a time, so EM and the bot work side by side; a caller that stops early
        has asked for at most one page more than it read."""
        return self._walk(parse_page, type_, filter_, sort=(sort_asc, sort_desc), size=page_size)

    def query_job_sessions(
        self,
        type_: str,
        filter_: str = "",
        *,
        sort_asc: str = "",
        sort_desc: str = "",
        page_size: int | None = None,
    ) -> Iterator[JobSession]:
        """Yield every matching job session (`BackupJobSession`, `ReplicaJobSession`), page
        by page as `query` does."""
        sort = (sort_asc, sort_desc)
        return self._walk(parse_job_sessions, type_, filter_, sort=sort, size=page_size)

    def query_jobs(self, filter_: str = "", *, page_size: int | None = None) -> Iterator[Job]:
        """Yield every job (`query?type=Job`), page by page, sorted by name."""
        return self._walk(parse_jobs, "Job", filter_, sort=("Name", ""), size=page_size)

    def retry_job(self, job_uid: str, *, agent: bool = False) -> Task:
        """Ask EM to retry a job (`POST /jobs/{id}?action=retry`, an agent job's
        `POST /agents/jobs/{id}?action=retry`); the task it made. Sent once, never retried: a
        retry that went through and lost its answer must not be asked for twice. Raises
        SourceError (EMRejected with EM's own words)."""
        guid = job_uid.rsplit(":", 1)[-1]
        path = f"/api/agents/jobs/{guid}" if agent else f"/api/jobs/{guid}"
        return parse_task(self._send_once("POST", path, {"action": "retry"}))

    def task(self, task_id: str) -> Task:
        """The task `task_id` as EM tells it now (`GET /tasks/{id}`, retried as any read)."""
        return parse_task(self._get(f"/api/tasks/{task_id}", {}))

    def _send_once(self, method: str, path: str, params: dict[str, str | int]) -> bytes:
        self.requests += 1
        try:
            response = self._http.request(method, path, params=params)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            self._raise_for(response)
        return response.content

    def first_rows(self, type_: str, size: int = 1) -> int:
        """How many rows the first page of a job-session or job query holds (a reachability
        and permission check: `check`)."""
        body = self._page_body(type_, "", 1, size, sort_asc="", sort_desc="")
        rows = parse_jobs(body)[0] if type_ == "Job" else parse_job_sessions(body)[0]
        return len(rows)

    def _walk(
        self,
        parse: Callable[[bytes], tuple[list[T], Page | None]],
        type_: str,
        filter_: str,
        *,
        sort: tuple[str, str],
        size: int | None,
    ) -> Iterator[T]:
        sort_asc, sort_desc = sort
        size = size or self.settings.page_size

        def fetch(num: int) -> bytes:
            return self._page_body(
                type_, filter_, num, size, sort_asc=sort_asc, sort_desc=sort_desc
            )

        pool: ThreadPoolExecutor | None = None

        def ask(num: int) -> Future[bytes]:
            nonlocal pool
            pool = pool or ThreadPoolExecutor(1, thread_name_prefix="em-next-page")
            return pool.submit(fetch, num)

        try:
            num, body, count = 1, fetch(1), 0
            while True:
                # The page count of the page before (EM may have changed since).
                ahead = ask(num + 1) if num < count else None
                items, info = parse(body)
                if info is None or info.num >= info.count or not items:
                    yield from items
                    return
                wanted, count = info.num + 1, info.count
                if ahead is None or wanted != num + 1:  # the first page, or EM renumbered
                    ahead = ask(wanted)
                yield from items
                body, num = ahead.result(), wanted
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def head_and_count(
        self, type_: str, filter_: str, *, sort_desc: str, size: int
    ) -> tuple[list[TaskSession], int]:
        """The first `size` matches and the exact number of matches (EM gives no total:
        fetch the last page too when there is more than one)."""
        head, info = self.page(type_, filter_, page=1, size=size, sort_desc=sort_desc)
        if info is None or info.count <= 1 or len(head) < size:
            return head, len(head)
        last, _ = self.page(type_, filter_, page=info.count, size=size, sort_desc=sort_desc)
        return head, (info.count - 1) * size + len(last)

    def ping(self) -> None:
        """Cheap reachability check: log on (if needed) and ask for one page of one item."""
        self.page("ReplicaTaskSession", "", page=1, size=1)
