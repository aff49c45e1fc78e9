"""Settings: `config/bot.toml` plus the environment, validated into frozen dataclasses.

The environment is *passed in* (only `__main__` touches `os.environ`). Every problem is
collected and reported at once, naming the key. Secrets print as `<SECRET>`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.errors import ConfigError
from bot.models import RESULTS, SESSION_TYPES

DEFAULT_CONFIG = "config/bot.toml"
DEFAULT_STATE = "var/state.sqlite"
DEFAULT_SLACK_API = "https://slack.com/api/"

_DURATION = re.compile(r"(\d+)\s*(ms|[smhdw])")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Secret:
    """A secret string that never shows itself in reprs, logs or tracebacks."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "<SECRET>"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


def parse_duration(text: object) -> timedelta:
    """`"90s"`, `"2m"`, `"24h"`, `"7d"`, `"1h30m"` → timedelta. Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string such as '90s' or '24h', got {text!r}")
    compact = text.strip().lower()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(compact):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not compact or pos != len(compact):
        raise ValueError(f"{text!r} is not a duration; use forms like '90s', '2m', '24h', '7d'")
    return timedelta(seconds=total)


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


# ---------------------------------------------------------------- converters
Conv = Callable[[Any], Any]


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v


def _int_range(lo: int, hi: int) -> Conv:
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"expected a whole number from {lo} to {hi}, got {v!r}")
        return v

    return conv


def _float_min(lo: float) -> Conv:
    def conv(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or v < lo:
            raise ValueError(f"expected a number >= {lo}, got {v!r}")
        return float(v)

    return conv


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _choices(allowed: tuple[str, ...], *, many: bool) -> Conv:
    def one(item: Any) -> str:
        for a in allowed:
            if isinstance(item, str) and item.lower() == a.lower():
                return a
        raise ValueError(f"{item!r} is not one of {', '.join(allowed)}")

    def conv(v: Any) -> Any:
        if not many:
            return one(v)
        if not isinstance(v, list) or not v:
            raise ValueError(f"expected a non-empty list of {', '.join(allowed)}")
        return tuple(one(i) for i in v)

    return conv


def _str_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
        raise ValueError(f"expected a list of strings, got {v!r}")
    return tuple(v)


def _positive_duration(v: Any) -> timedelta:
    d = parse_duration(v)
    if d <= timedelta(0):
        raise ValueError(f"{v!r} must be longer than zero")
    return d


def _clock(v: Any) -> time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", v) if isinstance(v, str) else None
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"expected a time of day like '08:00', got {v!r}")
    return time(int(m.group(1)), int(m.group(2)))


def _zone(v: Any) -> str:
    try:
        ZoneInfo(_str(v))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{v!r} is not an IANA time zone such as 'Europe/Berlin'") from exc
    return str(v)


def _url(v: Any) -> str:
    text = _str(v).strip().rstrip("/")
    if not re.match(r"https?://[^/\s]+", text):
        raise ValueError(f"expected an http(s) URL such as https://em.corp.local:9398, got {v!r}")
    return text.removesuffix("/api")


def _verify(v: Any) -> bool | str:
    if isinstance(v, bool):
        return v
    text = _str(v).strip()
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    if not Path(text).is_file():
        raise ValueError(f"expected true, false or the path of a CA bundle; no file at {text!r}")
    return text


# section → key → (attribute, converter)
SCHEMA: dict[str, dict[str, tuple[str, Conv]]] = {
    "veeam": {
        "url": ("url", _url),
        "username": ("username", _str),
        "verify_tls": ("verify_tls", _verify),
        "session_types": ("session_types", _choices(SESSION_TYPES, many=True)),
        "format": ("format", _choices(("xml", "json"), many=False)),
        "page_size": ("page_size", _int_range(1, 5000)),
        "timeout": ("timeout", _positive_duration),
        "attempts": ("attempts", _int_range(1, 10)),
        "backoff": ("backoff", parse_duration),
    },
    "poll": {
        "interval": ("interval", _positive_duration),
        "initial_lookback": ("initial_lookback", parse_duration),
        "overlap": ("overlap", parse_duration),
        "late_window": ("late_window", parse_duration),
        "sweep_interval": ("sweep_interval", _positive_duration),
    },
    "alerts": {
        "channel": ("channel", _str),
        "results": ("results", _choices(RESULTS, many=True)),
        "max_posts_per_second": ("max_posts_per_second", _float_min(0)),
        "burst": ("burst", _int_range(1, 100)),
        "retention": ("retention", _positive_duration),
        "retries": ("retries", _int_range(0, 10)),
        "backoff": ("backoff", parse_duration),
        "recovery": ("recovery", _bool),
        "broadcast_escalation": ("broadcast_escalation", _bool),
        "hold_for_retries": ("hold_for_retries", parse_duration),
        "max_messages_per_poll": ("max_messages_per_poll", _int_range(0, 100000)),
        "source_down_after": ("source_down_after", _positive_duration),
    },
    "digest": {
        "channel": ("channel", _str),
        "at": ("at", _clock),
        "timezone": ("timezone", _zone),
        "grace": ("grace", parse_duration),
        "enabled": ("enabled", _bool),
    },
    "slash": {
        "allowed_channels": ("allowed_channels", _str_list),
        "allowed_users": ("allowed_users", _str_list),
        "workers": ("workers", _int_range(1, 64)),
    },
    "templates": {"dir": ("dir", _str)},
    "http": {"port": ("port", _int_range(1, 65535))},
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
_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


def _read_file(path: Path, explicit: bool, problems: list[str]) -> dict[str, Any]:
    if not path.exists():
        if explicit:
            problems.append(f"BOT_CONFIG: no config file at {str(path)!r}")
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        problems.append(f"{path}: not valid TOML ({exc})")
        return {}


def _convert(raw: dict[str, Any], problems: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {name: {} for name in SCHEMA}
    for section, body in raw.items():
        if section not in SCHEMA:
            problems.append(f"[{section}]: unknown section (known: {', '.join(SCHEMA)})")
            continue
        if not isinstance(body, dict):
            problems.append(f"[{section}]: must be a table")
            continue
        for key, value in body.items():
            if section == "veeam" and key == "servers":
                out["veeam"]["servers"] = value  # checked by _servers, with the environment
                continue
            spec = SCHEMA[section].get(key)
            if spec is None:
                problems.append(f"[{section}] {key}: unknown key")
                continue
            try:
                out[section][spec[0]] = spec[1](value)
            except ValueError as exc:
                problems.append(f"[{section}] {key}: {exc}")
    return out


def _env_layer(env: Mapping[str, str], raw: dict[str, Any]) -> None:
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            raw.setdefault(section, {})[key] = env[var]


def load_settings(env: Mapping[str, str], *, require: tuple[str, ...] = ()) -> Settings:
    """Build settings from the config file named by `BOT_CONFIG` and the given environment.

    `require` names the parts a command needs: "veeam" (EM URL and account), "slack"
    (bot token and alert channel), "http" (signing secret unless Socket Mode).
    """
    problems: list[str] = []
    explicit = bool(env.get("BOT_CONFIG"))
    path = Path(env.get("BOT_CONFIG") or DEFAULT_CONFIG)
    raw = _read_file(path, explicit, problems)
    _env_layer(env, raw)
    conv = _convert(raw, problems)
    entries = conv["veeam"].pop("servers", None)
    sections = {name: cls(**conv[name]) for name, cls in SECTION_TYPES.items()}
    password = Secret(env.get("VEEAM_PASSWORD", ""))
    sections["veeam"] = VeeamSettings(**{**sections["veeam"].__dict__, "password": password})
    servers: tuple[VeeamSettings, ...] = (sections["veeam"],)
    if entries is not None:
        servers = _servers(entries, sections["veeam"], env, problems)
        if servers:
            sections["veeam"] = servers[0]
    slack = SlackSettings(
        bot_token=Secret(env.get("SLACK_BOT_TOKEN", "")),
        signing_secret=Secret(env.get("SLACK_SIGNING_SECRET", "")),
        app_token=Secret(env.get("SLACK_APP_TOKEN", "")),
        api_url=env.get("SLACK_API_URL") or DEFAULT_SLACK_API,
    )
    port, port_set = 3000, bool(env.get("PORT"))
    if env.get("PORT"):
        try:
            port = _int_range(0, 65535)(int(env["PORT"]))  # 0: any free port (tests)
        except ValueError:
            problems.append(f"PORT: expected a port number, got {env['PORT']!r}")
    settings = Settings(
        **sections,
        slack=slack,
        templates_dir=conv["templates"].get("dir", ""),
        state_path=env.get("BOT_STATE_PATH") or DEFAULT_STATE,
        port=port,
        port_set=port_set,
        config_path=str(path),
        servers=servers,
    )
    problems += _missing(settings, require)
    if problems:
        raise ConfigError(problems)
    return settings


def _servers(
    entries: Any, shared: VeeamSettings, env: Mapping[str, str], problems: list[str]
) -> tuple[VeeamSettings, ...]:
    """`[[veeam.servers]]`: each entry a name, a URL, the names of the environment variables
    holding its credentials, and any `[veeam]` key it overrides."""
    if not isinstance(entries, list) or not entries or any(type(e) is not dict for e in entries):
        problems.append("[[veeam.servers]]: expected one or more tables with name and url")
        return ()
    if shared.url:
        problems.append(
            "VEEAM_URL (or [veeam] url): set, but [[veeam.servers]] lists the servers; give "
            "each its url there"
        )
    out: list[VeeamSettings] = []
    for n, entry in enumerate(entries, 1):
        name = entry.get("name")
        where = f"[[veeam.servers]] {name}" if isinstance(name, str) else f"[[veeam.servers]] #{n}"
        if not isinstance(name, str) or not _SERVER_NAME.fullmatch(name):
            problems.append(f"{where}: name must be 1-40 letters, digits, '.', '_' or '-'")
        elif name in {s.server for s in out}:
            problems.append(f"{where}: a second server with this name")
        else:
            out.append(_server(name, where, entry, shared=shared, env=env, problems=problems))
    return tuple(out)


def _server(
    name: str,
    where: str,
    entry: dict[str, Any],
    *,
    shared: VeeamSettings,
    env: Mapping[str, str],
    problems: list[str],
) -> VeeamSettings:
    values: dict[str, Any] = {**shared.__dict__, "server": name}
    sources = {"username": "VEEAM_USERNAME", "password": "VEEAM_PASSWORD"}
    if "username" in entry:
        sources["username"] = f"{where} username"
    for key, value in entry.items():
        spec = SCHEMA["veeam"].get(key)
        if spec is None:
            if key not in SERVER_KEYS:
                problems.append(f"{where} {key}: unknown key")
            continue
        try:
            values[spec[0]] = spec[1](value)
        except ValueError as exc:
            problems.append(f"{where} {key}: {exc}")
    for key, attr in (("username_env", "username"), ("password_env", "password")):
        var = entry.get(key)
        if var is None:
            if not values[attr]:  # no [veeam] username, VEEAM_USERNAME or VEEAM_PASSWORD either
                shared_var = f"VEEAM_{attr.upper()}"
                problems.append(f"{where}: {key} is required (or {shared_var} for all)")
        elif not isinstance(var, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            problems.append(f"{where} {key}: expected the name of an environment variable")
        elif not env.get(var):
            problems.append(f"{var}: not set ({attr} of Enterprise Manager {name})")
        else:
            values[attr] = Secret(env[var]) if attr == "password" else env[var]
            sources[attr] = var
    values["credentials"] = f"{sources['username']} and {sources['password']}"
    if not values.get("url"):
        problems.append(f"{where}: url is required, e.g. https://em1.corp.local:9398")
    return VeeamSettings(**values)


def _missing(s: Settings, require: tuple[str, ...]) -> list[str]:
    out = []
    if "veeam" in require and not s.many:
        if not s.veeam.url:
            out.append("VEEAM_URL (or [veeam] url): not set; e.g. https://em.corp.local:9398")
        if not s.veeam.username:
            out.append("VEEAM_USERNAME (or [veeam] username): not set")
        if not s.veeam.password:
            out.append("VEEAM_PASSWORD: not set (secrets come only from the environment)")
    if "slack" in require:
        if not s.slack.bot_token:
            out.append("SLACK_BOT_TOKEN: not set")
        if not s.alerts.channel:
            out.append("SLACK_ALERT_CHANNEL (or [alerts] channel): not set")
    if "http" in require and not s.slack.socket_mode and not s.slack.signing_secret:
        out.append("SLACK_SIGNING_SECRET: not set (needed in HTTP mode, without SLACK_APP_TOKEN)")
    return out
