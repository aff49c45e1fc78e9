"""Settings: `config/bot.toml` plus the environment, validated into frozen dataclasses.

The environment is *passed in* (only `__main__` touches `os.environ`). Every problem is
collected and reported at once, naming the key. Secrets print as `<SECRET>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import time, timedelta
from urllib.parse import urlsplit

from bot.config.convert import (
    Conv,
    boolean,
    choices,
    clock_time,
    em_url,
    float_min,
    int_range,
    parse_duration,
    positive_duration,
    string,
    string_list,
    time_zone,
    tls_verify,
)
from bot.models import RESULTS, SESSION_TYPES

DEFAULT_CONFIG = "config/bot.toml"
DEFAULT_STATE = "var/state.sqlite"
DEFAULT_SLACK_API = "https://slack.com/api/"


@dataclass(frozen=True)
class Secret:
    """A secret string that never shows itself in reprs, logs or tracebacks."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "<SECRET>"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True)
class VeeamSettings:
    url: str = ""
    username: str = ""
    password: Secret = Secret("")
    verify_tls: bool | str = True
    session_types: tuple[str, ...] = ("ReplicaTaskSession",)
    format: str = "xml"
    page_size: int = 500
    timeout: timedelta = timedelta(seconds=30)
    attempts: int = 3  # tries of each idempotent EM request (1: no retry)
    backoff: timedelta = timedelta(seconds=1)  # before the first retry; doubles, plus jitter
    # The `name` of a `[[veeam.servers]]` entry; "" for the single server of `[veeam] url`.
    # It scopes the server's checkpoints in the state store and is shown in messages.
    server: str = ""
    # Where the account comes from, for messages that say what to fix (never the values).
    credentials: str = "VEEAM_USERNAME and VEEAM_PASSWORD"

    @property
    def name(self) -> str:
        """The Enterprise Manager's name in problem identities: its host name."""
        return urlsplit(self.url).hostname or self.url or "em"

    @property
    def label(self) -> str:
        """How logs, metrics and messages name this Enterprise Manager."""
        return self.server or self.name


@dataclass(frozen=True)
class PollSettings:
    interval: timedelta = timedelta(minutes=5)
    initial_lookback: timedelta = timedelta(hours=24)
    overlap: timedelta = timedelta(minutes=30)
    # A session EM lists up to this long after it ended is still announced (once).
    late_window: timedelta = timedelta(hours=24)
    # How often a poll looks back over the whole late window (and the first poll of a process).
    sweep_interval: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class AlertSettings:
    channel: str = ""
    results: tuple[str, ...] = ("Failed", "Warning")
    max_posts_per_second: float = 1.0
    burst: int = 3
    retention: timedelta = timedelta(days=14)
    retries: int = 3
    backoff: timedelta = timedelta(seconds=1)
    recovery: bool = True  # reply in the thread and update the alert when a VM recovers
    broadcast_escalation: bool = True  # a repeat from Warning to Failed shows in the channel
    hold_for_retries: timedelta = timedelta(0)  # announce a failure only if no retry fixed it
    max_messages_per_poll: int = 20  # more alerts than this become one catch-up message
    # An Enterprise Manager unreachable (or refusing the logon) this long gets one alert.
    source_down_after: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class DigestSettings:
    channel: str = ""
    at: time = time(8, 0)
    timezone: str = "UTC"
    grace: timedelta = timedelta(hours=6)
    enabled: bool = True


@dataclass(frozen=True)
class SlashSettings:
    allowed_channels: tuple[str, ...] = ()
    allowed_users: tuple[str, ...] = ()
    workers: int = 16


@dataclass(frozen=True)
class SlackSettings:
    bot_token: Secret = Secret("")
    signing_secret: Secret = Secret("")
    app_token: Secret = Secret("")
    api_url: str = DEFAULT_SLACK_API

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)


@dataclass(frozen=True)
class HttpSettings:
    # The health and metrics server in Socket Mode (HTTP mode serves them beside /slack/events
    # on $PORT). 0: off, unless PORT is set.
    port: int = 0


@dataclass(frozen=True)
class Settings:
    veeam: VeeamSettings = VeeamSettings()  # the first (or only) Enterprise Manager
    poll: PollSettings = PollSettings()
    alerts: AlertSettings = AlertSettings()
    digest: DigestSettings = DigestSettings()
    slash: SlashSettings = SlashSettings()
    slack: SlackSettings = SlackSettings()
    templates_dir: str = ""
    state_path: str = DEFAULT_STATE
    port: int = 3000
    port_set: bool = False  # PORT came from the environment
    config_path: str = ""
    http: HttpSettings = HttpSettings()
    # Every Enterprise Manager watched: `[[veeam.servers]]`, or the one of `[veeam] url`.
    servers: tuple[VeeamSettings, ...] = ()

    @property
    def digest_channel(self) -> str:
        return self.digest.channel or self.alerts.channel

    @property
    def many(self) -> bool:
        """More than the single server of `[veeam] url`: messages name the server."""
        return any(s.server for s in self.servers)

    def __post_init__(self) -> None:
        if not self.servers:  # built in code with one `veeam`: that is the server
            object.__setattr__(self, "servers", (self.veeam,))

    def for_server(self, server: VeeamSettings) -> Settings:
        """These settings as one server's pipeline sees them (`veeam` is that server)."""
        return replace(self, veeam=server)

    @property
    def health_port(self) -> int | None:
        """Where health and metrics are served in Socket Mode, or None."""
        if self.http.port:
            return self.http.port
        return self.port if self.port_set else None


# section → key → (attribute, converter)
SCHEMA: dict[str, dict[str, tuple[str, Conv]]] = {
    "veeam": {
        "url": ("url", em_url),
        "username": ("username", string),
        "verify_tls": ("verify_tls", tls_verify),
        "session_types": ("session_types", choices(SESSION_TYPES, many=True)),
        "format": ("format", choices(("xml", "json"), many=False)),
        "page_size": ("page_size", int_range(1, 5000)),
        "timeout": ("timeout", positive_duration),
        "attempts": ("attempts", int_range(1, 10)),
        "backoff": ("backoff", parse_duration),
    },
    "poll": {
        "interval": ("interval", positive_duration),
        "initial_lookback": ("initial_lookback", parse_duration),
        "overlap": ("overlap", parse_duration),
        "late_window": ("late_window", parse_duration),
        "sweep_interval": ("sweep_interval", positive_duration),
    },
    "alerts": {
        "channel": ("channel", string),
        "results": ("results", choices(RESULTS, many=True)),
        "max_posts_per_second": ("max_posts_per_second", float_min(0)),
        "burst": ("burst", int_range(1, 100)),
        "retention": ("retention", positive_duration),
        "retries": ("retries", int_range(0, 10)),
        "backoff": ("backoff", parse_duration),
        "recovery": ("recovery", boolean),
        "broadcast_escalation": ("broadcast_escalation", boolean),
        "hold_for_retries": ("hold_for_retries", parse_duration),
        "max_messages_per_poll": ("max_messages_per_poll", int_range(0, 100000)),
        "source_down_after": ("source_down_after", positive_duration),
    },
    "digest": {
        "channel": ("channel", string),
        "at": ("at", clock_time),
        "timezone": ("timezone", time_zone),
        "grace": ("grace", parse_duration),
        "enabled": ("enabled", boolean),
    },
    "slash": {
        "allowed_channels": ("allowed_channels", string_list),
        "allowed_users": ("allowed_users", string_list),
        "workers": ("workers", int_range(1, 64)),
    },
    "templates": {"dir": ("dir", string)},
    "http": {"port": ("port", int_range(1, 65535))},
}

# environment variable → (section, key) it overrides; secrets are handled apart.
ENV_OVERRIDES = {
    "VEEAM_URL": ("veeam", "url"),
    "VEEAM_USERNAME": ("veeam", "username"),
    "VEEAM_VERIFY_TLS": ("veeam", "verify_tls"),
    "SLACK_ALERT_CHANNEL": ("alerts", "channel"),
    "SLACK_DIGEST_CHANNEL": ("digest", "channel"),
}
SECTION_TYPES = {
    "veeam": VeeamSettings,
    "poll": PollSettings,
    "alerts": AlertSettings,
    "digest": DigestSettings,
    "slash": SlashSettings,
    "http": HttpSettings,
}
# Keys of a `[[veeam.servers]]` entry beside the `[veeam]` keys it may override.
SERVER_KEYS = ("name", "username_env", "password_env")
