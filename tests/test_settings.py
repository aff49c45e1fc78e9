"""Settings: file + environment, every problem at once, secrets hidden."""

from __future__ import annotations

import logging
from datetime import time, timedelta
from pathlib import Path

import pytest

from bot.config.convert import parse_duration
from bot.config.load import load_settings
from bot.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "bot.toml"


def env_for(path: Path, **extra: str) -> dict[str, str]:
    return {"BOT_CONFIG": str(path), **extra}


def test_the_shipped_example_config_is_valid() -> None:
    s = load_settings({"BOT_CONFIG": str(EXAMPLE)})
    assert s.veeam.session_types == ("ReplicaTaskSession",)
    assert s.poll.overlap == timedelta(minutes=30)
    assert s.alerts.results == ("Failed", "Warning")
    assert s.digest.at == time(8, 0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("2m", 120),
        ("24h", 86400),
        ("7d", 604800),
        ("1h30m", 5400),
        ("0s", 0),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "5", "h", "5x", "1.5h", "-3m", 5])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_environment_overrides_and_url_normalisation(tmp_path: Path) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text('[veeam]\nurl = "https://file:9398"\n[alerts]\nchannel = "#file"\n')
    s = load_settings(
        env_for(
            cfg,
            VEEAM_URL="https://em.corp.local:9398/api/",
            SLACK_ALERT_CHANNEL="C123",
            SLACK_DIGEST_CHANNEL="C456",
            BOT_STATE_PATH=str(tmp_path / "s.sqlite"),
            PORT="8080",
        )
    )
    assert s.veeam.url == "https://em.corp.local:9398"
    assert s.alerts.channel == "C123" and s.digest_channel == "C456"
    assert s.state_path.endswith("s.sqlite") and s.port == 8080


def test_all_problems_are_reported_at_once_naming_each_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text(
        '[veeam]\nurl = "ftp://x"\nformat = "yaml"\npage_size = 0\ncolour = "red"\n'
        '[poll]\ninterval = "soon"\n[alerts]\nresults = ["Failed", "Broken"]\n'
        '[digest]\ntimezone = "Mars/Olympus"\nat = "25:00"\n[extra]\nx = 1\n'
    )
    with pytest.raises(ConfigError) as err:
        load_settings(env_for(cfg, VEEAM_VERIFY_TLS="/no/such/ca.pem"), require=("veeam", "slack"))
    text = str(err.value)
    for needle in (
        "[veeam] url",
        "[veeam] format",
        "[veeam] page_size",
        "[veeam] colour: unknown key",
        "[poll] interval",
        "[alerts] results",
        "'Broken'",
        "[digest] timezone",
        "[digest] at",
        "[extra]: unknown section",
        "[veeam] verify_tls",
        "VEEAM_PASSWORD: not set",
        "SLACK_BOT_TOKEN: not set",
    ):
        assert needle in text, needle
    assert len(err.value.problems) >= 13


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config file"):
        load_settings(env_for(tmp_path / "nope.toml"))


def test_secrets_never_show_in_reprs_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "bot.toml"
    cfg.write_text("")
    s = load_settings(
        env_for(
            cfg,
            VEEAM_PASSWORD="pw-SeCrEt",
            SLACK_BOT_TOKEN="xoxb-SeCrEt",
            SLACK_SIGNING_SECRET="sig-SeCrEt",
            SLACK_APP_TOKEN="xapp-SeCrEt",
        )
    )
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("settings: %s %r", s, s)
    for text in (repr(s), str(s), caplog.text):
        assert "SeCrEt" not in text
    assert s.slack.socket_mode and s.veeam.password.value == "pw-SeCrEt"


def test_the_example_config_satisfies_no_required_setting() -> None:
    """No placeholder stands in for a missing URL, account or channel: each is an error
    naming the variable that sets it."""
    with pytest.raises(ConfigError) as err:
        load_settings({"BOT_CONFIG": str(EXAMPLE)}, require=("veeam", "slack"))
    text = str(err.value)
    for name in ("VEEAM_URL", "VEEAM_USERNAME", "VEEAM_PASSWORD", "SLACK_BOT_TOKEN"):
        assert name in text
    assert "SLACK_ALERT_CHANNEL (or [alerts] channel): not set" in text
    s = load_settings(
        {
            "BOT_CONFIG": str(EXAMPLE),
            "VEEAM_URL": "https://em.example.local:9398",
            "VEEAM_USERNAME": "u",
            "VEEAM_PASSWORD": "p",
            "SLACK_BOT_TOKEN": "xoxb-1",
            "SLACK_ALERT_CHANNEL": "C0123",
        },
        require=("veeam", "slack"),
    )
    assert (s.veeam.url, s.alerts.channel, s.veeam.verify_tls) == (
        "https://em.example.local:9398",
        "C0123",
        True,
    )
