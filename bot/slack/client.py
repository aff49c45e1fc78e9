"""The Slack Web API client: slack-sdk's WebClient with retries of reads (5xx, lost
connections, timeouts) and of 429s, waits done by an injectable `sleep`, and per-channel
pacing of posts (`Pacer`)."""

from __future__ import annotations

import logging
import random
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Callable
from http.client import HTTPException

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.jitter import RandomJitter
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState


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
