"""Prometheus metrics (`GET /metrics`), per Enterprise Manager where that makes sense.

One registry per bot process (not prometheus-client's global one), so that a test or a
benchmark can hold several. Counters and the pending gauge move as polls happen; open
problems and active mutes are read from the state store when Prometheus scrapes (a count
over 10,000 open problems takes about 30 ms: once a scrape, not once a poll under the
store's lock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from bot import __version__

# EM answers in tens of milliseconds when idle and in seconds when busy or far away.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        Info("veeam_bot", "The bot's version.", registry=r).info({"version": __version__})
        self.polls = Counter(
            "veeam_bot_polls", "Polls by outcome (ok, em_error, slack_error).",
            ["server", "outcome"], registry=r,
        )  # fmt: skip
        self.poll_errors = Counter(
            "veeam_bot_poll_errors",
            "Polls that failed, by kind: em_unreachable, em_rejected (logon or query refused), "
            "em_error, slack.",
            ["server", "kind"],
            registry=r,
        )
        self.em_latency = Histogram(
            "veeam_bot_em_request_seconds",
            "Enterprise Manager request latency (logon, query pages, logout).",
            ["server"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "veeam_bot_retries", "EM requests and Slack posts sent again after a transient "
            "failure.", ["server"], registry=r,
        )  # fmt: skip
        self.fetched = Counter(
            "veeam_bot_sessions_fetched",
            "Task and job sessions read from EM.",
            ["server"],
            registry=r,
        )
        self.announced = Counter(
            "veeam_bot_alerts_announced",
            "Sessions announced in Slack (first alerts and repeats), by result.",
            ["server", "result"],
            registry=r,
        )
        self.recovered = Counter(
            "veeam_bot_recoveries", "Problems closed by a Success.", ["server"], registry=r
        )
        self.pending = Gauge(
            "veeam_bot_deliveries_pending",
            "Alerts marked pending: not yet known to be in Slack.",
            ["server"],
            registry=r,
        )
        self.slack_errors = Counter(
            "veeam_bot_slack_errors",
            "Slack Web API calls that failed, by Slack's error code (or http_5xx, connection).",
            ["code"],
            registry=r,
        )
        self.last_success = Gauge(
            "veeam_bot_last_success_timestamp_seconds",
            "When a poll last reached EM and Slack alike (Unix time).",
            ["server"],
            registry=r,
        )
        self.source_down = Gauge(
            "veeam_bot_source_down",
            "1 while the Enterprise Manager is unreachable or refuses the logon.",
            ["server"],
            registry=r,
        )

    def read_state(self, state: Callable[[], tuple[dict[str, int], int]]) -> None:
        """`state()` → (open problems per server, active mutes), called at each scrape."""
        self.registry.register(_StateCollector(state))

    def read_episodes(self, episodes: Callable[[], dict[tuple[str, str], int]]) -> None:
        """`episodes()` → {(server, kind): jobs}, the jobs not running, at each scrape."""
        self.registry.register(_EpisodeCollector(episodes))

    def em_observer(self, server: str) -> Callable[[float], None]:
        """What an EM client calls with each request's duration."""
        child = self.em_latency.labels(server=server)
        return child.observe

    def slack_error(self, code: str) -> None:
        self.slack_errors.labels(code=code or "unknown").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, state: Callable[[], tuple[dict[str, int], int]]) -> None:
        self.state = state

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # known only when collected; nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        problems, mutes = self.state()
        family = GaugeMetricFamily(
            "veeam_bot_open_problems",
            "Problems (EM, type, job, VM) not yet recovered.",
            labels=["server"],
        )
        for server, count in sorted(problems.items()):
            family.add_metric([server], count)
        yield family
        yield GaugeMetricFamily("veeam_bot_active_mutes", "Mutes in force.", value=mutes)


class _EpisodeCollector(Collector):
    def __init__(self, episodes: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.episodes = episodes

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "veeam_bot_jobs_not_running",
            "Jobs that stopped running, by kind: stale, disabled (schedule), running (too long).",
            labels=["server", "kind"],
        )
        for (server, kind), count in sorted(self.episodes().items()):
            family.add_metric([server, kind], count)
        yield family
