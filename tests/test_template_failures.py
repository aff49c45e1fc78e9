"""A template that breaks on some data: caught at start-up against samples, and at run time
replaced by the packaged template for that one message, never holding an alert back."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bot.config.render import Renderer
from bot.emulator.server import Emulator
from bot.errors import ConfigError
from bot.ops.template_check import check_templates, sample_sessions
from tests.fake_slack import FakeSlack, _texts
from tests.helpers import bot_env, job_run, run_bot


@pytest.mark.parametrize(
    ("name", "body", "line"),
    [
        # StrictUndefined: a name the view does not have
        ("alert_vm.md.j2", "{{ vm }}\n{{ vm_owner }}\n", 2),
        # a running session: no end time, no duration
        ("alert_reason.md.j2", "*Reason:*\n\n{{ duration.split(' ')[1] }}\n", 3),
        # an empty value: a running session has processed 0 B
        ("alert_details.md.j2", "*Job:* {{ job }}\n{{ 100 // (size.split()[0] | int) }}\n", 2),
        ("digest_job.md.j2", "{{ rows[0].vm.upper() }} {{ rows[0].missing.x }}", 1),
        ("session.md.j2", "{{ vm | replace }}", 1),
    ],
)
def test_start_up_renders_every_override_against_samples(
    tmp_path: Path, name: str, body: str, line: int
) -> None:
    (tmp_path / name).write_text(body)
    renderer = Renderer(str(tmp_path))  # compiles fine
    with pytest.raises(ConfigError) as err:
        check_templates(renderer)
    first = err.value.problems[0]
    assert f"{name}, line {line}:" in first, first
    assert "(rendering " in first


def test_the_samples_hold_what_breaks_templates() -> None:
    samples = sample_sessions()
    everyone = [s for group in samples.values() for s in group]
    assert any(s.reason == "" for s in everyone)
    assert any(s.ended is None and s.state != "Completed" for s in everyone)
    assert any(len(group) == 40 for group in samples.values())
    assert any("<!channel>" in s.vm and "&" in s.job for s in everyone)
    check_templates(Renderer())  # the packaged templates pass


def test_an_override_that_breaks_on_one_session_never_holds_its_alert_back(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    templates = tmp_path / "templates"
    templates.mkdir()
    # Passes the start-up samples, fails for one VM of the site's data.
    (templates / "alert_details.md.j2").write_text(
        "CUSTOM *Job:* {{ job }}\n"
        "{% if vm == 'db07' %}{{ owner_of[vm] }}{% endif %}\n"
        "*Backup server:* {{ server }}\n"
    )
    (ok,) = job_run(em, now, [("web01", "Failed", "disk")], job="Job A")
    (bad,) = job_run(em, now, [("db07", "Failed", "disk")], job="Job B")
    toml = f'[alerts]\nmax_posts_per_second = 0\n[templates]\ndir = "{templates}"\n'
    env = bot_env(tmp_path, em.url, slack.url, toml)
    first = run_bot(env, "poll", "--once")
    assert first.returncode == 0, first.stderr
    assert Counter(slack.announced_uids()) == Counter([ok.uid, bad.uid])
    errors = [ln for ln in first.stderr.splitlines() if "alert_details.md.j2, line 2" in ln]
    assert len(errors) == 1 and bad.uid in errors[0], first.stderr
    texts = {
        m["metadata"]["event_payload"]["sessions"][0]["vm"]: "\n".join(_texts(m["attachments"]))
        for m in slack.posted()
    }
    assert "CUSTOM" in texts["web01"]
    assert "CUSTOM" not in texts["db07"] and "*Job:* Job B" in texts["db07"]
    second = run_bot(env, "poll", "--once")
    assert second.returncode == 0 and len(slack.posted()) == 2


def test_poll_with_an_override_that_fails_the_samples_stops_with_its_file_and_line(
    em: Emulator, slack: FakeSlack, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "alert_vm.md.j2").write_text("{{ vm }}\n{{ vm_owner }}\n")
    toml = f'[alerts]\nmax_posts_per_second = 0\n[templates]\ndir = "{templates}"\n'
    proc = run_bot(bot_env(tmp_path, em.url, slack.url, toml), "poll", "--once")
    assert proc.returncode == 78
    assert "alert_vm.md.j2, line 2: UndefinedError: 'vm_owner' is undefined" in proc.stderr
    assert "Traceback" not in proc.stderr
