"""Settings: `config/bot.toml` plus the environment, validated into frozen dataclasses.

Each configuration key is declared once, as a field of its section: its type (the
annotation), default, converter (bounds and error wording, `bot.config.convert`) and doc
(`key`). The loader (`bot.config.load`), the example configuration (`bot.config.generate`) and
the README's key table (checked by a test) all follow from these declarations. The
environment is *passed in* (only `__main__` touches `os.environ`). Secrets print as
`<SECRET>`.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, replace
from datetime import time, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bot.config.convert import (
    Conv,
    auto_or_duration,
    boolean,
    choices,
    clock_time,
    em_url,
    float_min,
    hold_duration,
    int_range,
    parse_duration,
    per_job,
    positive_duration,
    route_entries,
    string,
    string_list,
    time_zone,
    tls_verify,
    window_entries,
)
from bot.models import RESULTS, SESSION_TYPES

DEFAULT_CONFIG = "config/bot.toml"
DEFAULT_STATE = "var/state.sqlite"
DEFAULT_SLACK_API = "https://slack.com/api/"
T = TypeVar("T")


@dataclass(frozen=True)
class Secret:
    """A secret string that never shows itself in reprs, logs or tracebacks."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "<SECRET>"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


def key(default: T, conv: Conv, doc: str, *, example: str = "") -> T:
    """One configuration key, declared once: its type (the annotation), its default, its
    converter (which checks the bounds and words the error) and what it does (`doc`, shown
    in the example configuration). `example`: a key with no useful default is shown
    commented out, with this value."""
    meta = {"conv": conv, "doc": doc, "example": example}
    return field(default=default, metadata=meta)


REQUIRED = "Required; no default. "


@dataclass(frozen=True)
class VeeamSettings:
    url: str = key(
        "",
        em_url,
        REQUIRED + "Enterprise Manager base URL, with or without a "
        "trailing /api (VEEAM_URL overrides it), e.g.:",
        example='"https://em.example.local:9398"',
    )
    username: str = key(
        "",
        string,
        REQUIRED + "A Portal User account is enough "
        "(VEEAM_USERNAME overrides it; VEEAM_PASSWORD comes only from the "
        "environment), e.g.:",
        example='"svc-veeam-slack"',
    )
    password: Secret = Secret("")
    verify_tls: bool | str = key(
        True,
        tls_verify,
        "true (default), or the path of a CA bundle "
        "(PEM) that signed EM's certificate. EM's certificate is "
        "self-signed by default: export it (or its CA) and put the "
        "path here.",
    )
    session_types: tuple[str, ...] = key(
        ("ReplicaTaskSession",), choices(SESSION_TYPES, many=True), "Which task sessions to watch."
    )
    job_sessions: bool = key(
        True,
        boolean,
        "Also watch each watched type's job sessions: a job that fails before it "
        "processes any VM (repository offline, no proxy), and with BackupTaskSession the "
        "file share (NasBackup), agent and backup copy jobs, which have no VM task sessions.",
    )
    format: str = key(
        "xml",
        choices(("xml", "json"), many=False),
        '"xml" is EM\'s default and most stable form.',
    )
    page_size: int = key(
        500, int_range(1, 5000), "Sessions per page when walking EM's paged answers."
    )
    timeout: timedelta = key(timedelta(seconds=30), positive_duration, "Per-request timeout.")
    attempts: int = key(
        3,
        int_range(1, 10),
        "Tries of each idempotent EM request (logon, query "
        "page, logout) when EM answers 5xx, the connection fails or times out; "
        "1 turns retries off. A 4xx other than 401 is never retried.",
    )
    backoff: timedelta = key(
        timedelta(seconds=1),
        parse_duration,
        "Wait before the first retry; it doubles each time, plus up to as much random jitter.",
    )
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
    interval: timedelta = key(
        timedelta(minutes=5), positive_duration, "How often to ask EM for newly completed sessions."
    )
    initial_lookback: timedelta = key(
        timedelta(hours=24),
        parse_duration,
        "On the very first run, announce sessions that ended this far back.",
    )
    overlap: timedelta = key(
        timedelta(minutes=30),
        parse_duration,
        "Re-read this much before "
        "the checkpoint: EM collects from backup servers every 15 "
        "minutes.",
    )
    late_window: timedelta = key(
        timedelta(hours=24),
        parse_duration,
        "A backup server that was "
        "offline or busy brings sessions that ended hours ago. A "
        "session EM lists up to this long after it ended is still "
        "announced (once), marked as listed late.",
    )
    sweep_interval: timedelta = key(
        timedelta(hours=1),
        positive_duration,
        "The first poll of every process, and one poll this often, look back over late_window.",
    )


@dataclass(frozen=True)
class Route:
    """One `[[alerts.routes]]` entry: where the alerts it matches go. Empty lists match
    anything; globs match without regard to case."""

    channel: str
    jobs: tuple[str, ...] = ()
    vms: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()  # [[veeam.servers]] names
    types: tuple[str, ...] = ()  # "backup", "replica"
    results: tuple[str, ...] = ()  # "Failed", "Warning"
    cont: bool = False  # `continue`: also the routes below, and the alert channel
    digest: bool = False


def to_routes(v: Any) -> tuple[Route, ...]:
    return tuple(
        Route(e["channel"], e["jobs"], e["vms"], e["servers"], e["types"], e["results"],
              e["continue"], e["digest"])
        for e in route_entries(v)
    )  # fmt: skip


@dataclass(frozen=True)
class AlertSettings:
    channel: str = key(
        "",
        string,
        REQUIRED + 'Channel ID (preferred, e.g. "C0123ABCD") or '
        '"#name" for alerts (SLACK_ALERT_CHANNEL overrides it), e.g.:',
        example='"C0123ABCD"',
    )
    results: tuple[str, ...] = key(
        ("Failed", "Warning"), choices(RESULTS, many=True), "Which results are announced."
    )
    routes: tuple[Route, ...] = key(
        (),
        to_routes,
        "[[alerts.routes]]: an ordered list of routes, each a channel and what goes there: "
        "jobs, vms (shell-style globs, any case), servers ([[veeam.servers]] names), types "
        '("backup", "replica"), results ("Failed", "Warning"); empty lists match anything. '
        "The first route that matches takes the alert; with continue = true the routes "
        "below (and channel) are tried too. What no route takes goes to channel. A "
        "problem's repeats, recovery and job alerts stay where it opened, e.g.:",
        example='[{ channel = "C0DBA", jobs = ["SQL*"] }, { channel = "#noc", continue = true }]',
    )
    max_posts_per_second: float = key(
        1.0,
        float_min(0),
        "Pacing of chat.postMessage per channel (Slack allows about 1/s); 0 turns pacing off.",
    )
    burst: int = key(3, int_range(1, 100), "Posts allowed back to back before pacing starts.")
    retention: timedelta = key(
        timedelta(days=14),
        positive_duration,
        "How long announced sessions are remembered in the state store.",
    )
    retries: int = key(
        3,
        int_range(0, 10),
        "Attempts after a failed post (5xx, lost "
        "connection) within one poll. What still fails stays pending for the "
        "next poll.",
    )
    backoff: timedelta = key(
        timedelta(seconds=1),
        parse_duration,
        "Wait before the first of those attempts; doubled each time.",
    )
    recovery: bool = key(
        True,
        boolean,
        "A problem is (Enterprise Manager, session type, job, "
        'VM). When its VM succeeds again, reply "recovered" in the alert\'s '
        "thread and update the alert.",
    )
    broadcast_escalation: bool = key(
        True, boolean, "A repeat that turns a Warning into a Failure is also shown in the channel."
    )
    hold_for_retries: timedelta = key(
        timedelta(0),
        hold_duration,
        "Announce a failure only if "
        "no Success of the same problem arrives within this long "
        '(Veeam retries a failed VM); "0m" announces at once. "auto" holds each failure '
        "for its own job's retry window (RetryTimes x RetryTimeout, from the job "
        "inventory) plus 5 minutes, and 35m for a job the inventory does not know.",
    )
    max_messages_per_poll: int = key(
        20,
        int_range(0, 100000),
        "More alerts than this in one "
        "poll (a first start, a long outage) become one catch-up "
        "message; 0 means no limit.",
    )
    source_down_after: timedelta = key(
        timedelta(minutes=15),
        positive_duration,
        "An "
        "Enterprise Manager unreachable (or refusing the logon) "
        "this long gets one alert here; when it answers again, "
        "one reply in that alert's thread says so.",
    )


@dataclass(frozen=True)
class JobsSettings:
    refresh: timedelta = key(
        timedelta(minutes=15),
        parse_duration,
        "How often to read the job inventory (query?type=Job: schedules, next runs, retry "
        'options) for the stale, disabled and long-running alerts and hold_for_retries = "auto"; '
        '"0m" turns the inventory off.',
    )


@dataclass(frozen=True)
class StaleSettings:
    after: timedelta | str = key(
        "auto",
        auto_or_duration,
        "A scheduled, enabled job with no successful run for this long gets one alert. "
        '"auto" learns each job\'s interval from its successful runs (about twice the '
        "median gap, at least 2h); until a job has 3 runs, its NextRun decides.",
    )
    grace: timedelta = key(
        timedelta(hours=1),
        parse_duration,
        "Without enough history: stale when NextRun is this far in the past and no run "
        "started since.",
    )
    disabled: bool = key(
        True, boolean, "One alert when a job's schedule is disabled; a reply when it is back."
    )
    running_min: timedelta = key(
        timedelta(hours=2),
        positive_duration,
        "A run still working after about 3 times its job's median duration, and at least "
        "this long, gets one alert.",
    )
    jobs: tuple[tuple[str, timedelta | None], ...] = key(
        (),
        per_job,
        'Per job name: the interval for that job, or "off" (never stale), e.g.:',
        example='{ "Nightly SQL" = "36h", "Monthly archive" = "off" }',
    )

    def override(self, job: str) -> tuple[bool, timedelta | None]:
        """(whether [stale.jobs] names the job, its interval: None for "off")."""
        for name, value in self.jobs:
            if name == job:
                return True, value
        return False, None


@dataclass(frozen=True)
class Window:
    """One `[[mutes.windows]]` entry: a recurring maintenance window. `days` are the days
    it starts on (0 Monday); past midnight, it ends the next day."""

    name: str
    days: tuple[int, ...]
    start: time
    end: time
    timezone: str = "UTC"
    jobs: tuple[str, ...] = ()  # globs, as routes; empty = every job
    servers: tuple[str, ...] = ()  # [[veeam.servers]] names


def to_windows(v: Any) -> tuple[Window, ...]:
    return tuple(Window(**e) for e in window_entries(v))


@dataclass(frozen=True)
class MuteSettings:
    windows: tuple[Window, ...] = key(
        (),
        to_windows,
        "[[mutes.windows]]: recurring maintenance windows: name, days (mon … sun, the "
        'days a window starts), from and to ("22:00", "06:00": past midnight is fine), '
        "timezone (IANA), jobs (globs) and servers; empty lists match everything. A "
        "failure inside a window is held; when it ends, each problem still failing is "
        "announced (one catch-up when there are many), the rest are recorded, e.g.:",
        example='[{ name = "weekend patching", days = ["sat", "sun"], from = "22:00", '
        'to = "06:00", timezone = "Europe/Berlin" }]',
    )


@dataclass(frozen=True)
class ActionSettings:
    retry: bool = key(
        False,
        boolean,
        "A Retry job button on Failed alerts and /veeam retry job:NAME: EM's retry of the "
        "job's failed VMs. Needs an EM account allowed to start jobs, and allowed_users.",
    )
    allowed_users: tuple[str, ...] = key(
        (),
        string_list,
        "The Slack user IDs who may retry jobs (at least one when retry = true); every "
        "other click is told who may.",
        example='["U0123ABCD"]',
    )


@dataclass(frozen=True)
class DigestSettings:
    channel: str = key(
        "",
        string,
        "Channel for the daily digest (SLACK_DIGEST_CHANNEL "
        "overrides; default: the alert channel).",
    )
    at: time = key(time(8, 0), clock_time, "Local time of day of the digest.")
    timezone: str = key("UTC", time_zone, "IANA time zone of `at`.")
    grace: timedelta = key(
        timedelta(hours=6),
        parse_duration,
        "If the bot was down at digest time, post on start when it is back within this long.",
    )
    enabled: bool = key(True, boolean, "Post the daily digest.")


@dataclass(frozen=True)
class SlashSettings:
    allowed_channels: tuple[str, ...] = key(
        (), string_list, "When non-empty, /veeam only answers in these channel IDs."
    )
    allowed_users: tuple[str, ...] = key(
        (), string_list, "When non-empty, /veeam only answers these user IDs."
    )
    workers: int = key(
        16,
        int_range(1, 64),
        "Worker threads that run /veeam queries (EM can be slow; acks never wait for them).",
    )


@dataclass(frozen=True)
class TemplateSettings:
    dir: str = key(
        "", string, "A folder whose .j2 files override the packaged templates of the same name."
    )


@dataclass(frozen=True)
class SlackSettings:
    bot_token: Secret = Secret("")
    signing_secret: Secret = Secret("")
    app_token: Secret = Secret("")
    api_url: str = DEFAULT_SLACK_API
    # Optional, for `check` only: an app configuration token and the app's ID, to read the
    # app's manifest (apps.manifest.export) and say when the Home tab's event is missing.
    config_token: Secret = Secret("")
    app_id: str = ""

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)


@dataclass(frozen=True)
class HttpSettings:
    port: int = key(
        0,
        int_range(1, 65535),
        "Socket Mode only: serve GET /healthz and GET "
        "/metrics on this port (default: $PORT when set, else off). HTTP mode "
        "serves them beside /slack/events on $PORT.",
        example="9102",
    )


@dataclass(frozen=True)
class Settings:
    veeam: VeeamSettings = VeeamSettings()  # the first (or only) Enterprise Manager
    poll: PollSettings = PollSettings()
    alerts: AlertSettings = AlertSettings()
    jobs: JobsSettings = JobsSettings()
    stale: StaleSettings = StaleSettings()
    mutes: MuteSettings = MuteSettings()
    actions: ActionSettings = ActionSettings()
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


# Every section of the config file, in the order the example configuration lists them.
SECTIONS: dict[str, type] = {
    "veeam": VeeamSettings,
    "poll": PollSettings,
    "alerts": AlertSettings,
    "jobs": JobsSettings,
    "stale": StaleSettings,
    "mutes": MuteSettings,
    "actions": ActionSettings,
    "digest": DigestSettings,
    "slash": SlashSettings,
    "templates": TemplateSettings,
    "http": HttpSettings,
}


def config_keys(section: type) -> list[Field[Any]]:
    """The fields of a section that are configuration keys (declared with `key`)."""
    return [f for f in fields(section) if "conv" in f.metadata]


# section → key → (attribute, converter), derived from the declarations above.
SCHEMA: dict[str, dict[str, tuple[str, Conv]]] = {
    name: {f.name: (f.name, f.metadata["conv"]) for f in config_keys(cls)}
    for name, cls in SECTIONS.items()
}

# environment variable → (section, key) it overrides; secrets are handled apart.
ENV_OVERRIDES = {
    "VEEAM_URL": ("veeam", "url"),
    "VEEAM_USERNAME": ("veeam", "username"),
    "VEEAM_VERIFY_TLS": ("veeam", "verify_tls"),
    "SLACK_ALERT_CHANNEL": ("alerts", "channel"),
    "SLACK_DIGEST_CHANNEL": ("digest", "channel"),
}
# The sections that are fields of `Settings` (`[templates] dir` is read into templates_dir).
SECTION_TYPES = {name: cls for name, cls in SECTIONS.items() if name != "templates"}
# Keys of a `[[veeam.servers]]` entry beside the `[veeam]` keys it may override.
SERVER_KEYS = ("name", "username_env", "password_env")
