"""The example configuration (`config/bot.toml`, `python -m bot example-config`), written from
the key declarations in `bot.config.settings`: every key, its doc, its bounds and its default.
A test keeps the committed file equal to `example_toml()`; after changing a key, rewrite it
with `python -m bot.config.generate > config/bot.toml`."""

from __future__ import annotations

import json
import textwrap
from dataclasses import Field
from datetime import time, timedelta
from typing import Any

from bot.config.settings import SECTIONS, config_keys

HEADER = """\
# Veeam → Slack alerting bot: example configuration with every key.
# Secrets (passwords, tokens) never go here: they come only from the environment.
# Durations are strings such as "90s", "2m", "24h", "7d". Unknown keys are errors.
# Written from the key declarations in bot/config/settings.py."""

SERVERS = """\
# Several Enterprise Managers (service providers, large sites): instead of url/VEEAM_URL, one
# [[veeam.servers]] table each. `name` (letters, digits, . _ -) names the server in alerts,
# the digest, /veeam (em:NAME), logs and metrics. `username_env` and `password_env` name the
# environment variables that hold its credentials (default: VEEAM_USERNAME/VEEAM_PASSWORD,
# shared). Any [veeam] key above may be overridden per server. Each server is polled on a
# worker of its own, with its own checkpoints and retries. For example:
# [[veeam.servers]]
# name = "em-east"
# url = "https://em-east.example.local:9398"
# username_env = "EM_EAST_USERNAME"
# password_env = "EM_EAST_PASSWORD"
# verify_tls = "/etc/veeam-slack-bot/em-east-ca.pem"
#
# [[veeam.servers]]
# name = "em-west"
# url = "https://em-west.example.local:9398"
# password_env = "EM_WEST_PASSWORD\""""
WIDTH = 94


def duration(value: timedelta) -> str:
    """A duration as the config file writes it: the largest whole unit ("14d", "30m")."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0m"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds % size == 0 and (unit != "d" or seconds > 86400):  # "24h", "2d"
            return f"{seconds // size}{unit}"
    raise AssertionError(value)


def toml_value(value: Any) -> str:
    """A default as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, timedelta):
        return json.dumps(duration(value))
    if isinstance(value, time):
        return json.dumps(f"{value:%H:%M}")
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return json.dumps(value)


def doc(f: Field[Any]) -> str:
    """What a key does, with its bounds where its converter has them."""
    allowed = getattr(f.metadata["conv"], "allowed", "")
    return str(f.metadata["doc"]) + (f" Allowed: {allowed}." if allowed else "")


def example_toml() -> str:
    lines = [HEADER]
    for name, section in SECTIONS.items():
        lines += ["", f"[{name}]"]
        for f in config_keys(section):
            lines += textwrap.wrap(doc(f), WIDTH, initial_indent="# ", subsequent_indent="# ")
            example = f.metadata["example"]
            lines.append(
                f"# {f.name} = {example}" if example else f"{f.name} = {toml_value(f.default)}"
            )
        if name == "veeam":
            lines += ["", SERVERS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(example_toml(), end="")
