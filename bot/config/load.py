"""Loading the settings: the config file named by `BOT_CONFIG`, then the environment, every
problem collected and reported at once (file, key, what is wrong)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bot.config.convert import int_range
from bot.config.settings import (
    DEFAULT_CONFIG,
    DEFAULT_SLACK_API,
    DEFAULT_STATE,
    ENV_OVERRIDES,
    SCHEMA,
    SECTION_TYPES,
    SERVER_KEYS,
    Secret,
    Settings,
    SlackSettings,
    VeeamSettings,
)
from bot.errors import ConfigError

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
        config_token=Secret(env.get("SLACK_APP_CONFIG_TOKEN", "")),
        app_id=env.get("SLACK_APP_ID", ""),
        api_url=env.get("SLACK_API_URL") or DEFAULT_SLACK_API,
    )
    port, port_set = 3000, bool(env.get("PORT"))
    if env.get("PORT"):
        try:
            port = int_range(0, 65535)(int(env["PORT"]))  # 0: any free port (tests)
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
    if settings.actions.retry and not settings.actions.allowed_users:
        problems.append(
            "[actions] retry = true needs allowed_users: the Slack user IDs who may retry "
            'jobs, e.g. allowed_users = ["U0123ABCD"]'
        )
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
