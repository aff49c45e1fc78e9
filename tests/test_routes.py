"""Routes (`[[alerts.routes]]`): the pure choice of channels, then alerts through the real
pipeline and the fake Slack: a group split between routes, `continue` copies, a repeat that
stays in its channel after the routes change, a copy a lost answer left unposted."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bot.alerts.routes import Router
from bot.config.load import load_settings
from bot.config.settings import Route, Settings
from bot.emulator.server import Emulator
from bot.errors import ConfigError
from tests.fake_slack import FakeSlack
from tests.helpers import Rig, job_run, settings_for

M = timedelta(minutes=1)
ROUTES = (
    Route("#dba", jobs=("SQL*",), vms=("sql*",)),
    Route("#noc", servers=("em-east",), cont=True),
    Route("#warnings", results=("Warning",)),
    Route("#replicas", types=("replica",), cont=True),
)


@pytest.mark.parametrize(
    ("job", "vm", "server", "type_", "result", "channels"),
    [
        ("SQL Nightly", "sql01", "", "backup", "Failed", ["#dba"]),  # first match wins
        ("sql nightly", "SQL01", "", "backup", "Failed", ["#dba"]),  # any case
        ("SQL Nightly", "web01", "", "backup", "Failed", ["#alerts"]),  # vm glob fails
        ("SQL Nightly", "", "", "backup", "Failed", ["#alerts"]),  # job-level: no VM to match
        ("Files", "f1", "em-east", "backup", "Failed", ["#noc", "#alerts"]),  # continue
        ("Files", "f1", "EM-EAST", "backup", "Warning", ["#noc", "#warnings"]),  # then a stop
        ("Files", "f1", "", "backup", "Warning", ["#warnings"]),
        ("Files", "f1", "", "replica", "Failed", ["#replicas", "#alerts"]),
        ("Files", "f1", "em-east", "replica", "Failed", ["#noc", "#replicas", "#alerts"]),
        ("Files", "f1", "", "backup", "Failed", ["#alerts"]),  # nothing matches: the default
    ],
)
def test_router(
    job: str, vm: str, server: str, type_: str, result: str, channels: list[str]
) -> None:
    router = Router(ROUTES, "#alerts")
    assert router.channels_of(job, vm, server, type_, result) == channels
    assert router.channels_of(job, vm, server, type_, result) == channels  # cached: the same


def test_no_routes_means_the_alert_channel() -> None:
    assert Router((), "C0ALERTS").channels_of("j", "v", "", "backup", "Failed") == ["C0ALERTS"]


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("[[alerts.routes]]\njobs = ['x']\n", "route #1: channel is required"),
        ("[[alerts.routes]]\nchannel = 'C1'\njob = ['x']\n", "route #1: unknown key 'job'"),
        ("[[alerts.routes]]\nchannel = 'C1'\ntypes = ['tape']\n", "'tape' is not one of"),
        ("[[alerts.routes]]\nchannel = 'C1'\ncontinue = 'yes'\n", "continue must be true"),
    ],
)
def test_a_bad_route_is_a_clear_configuration_error(
    tmp_path: Path, toml: str, problem: str
) -> None:
    path = tmp_path / "bot.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings({"BOT_CONFIG": str(path)})
    assert problem in str(err.value)


def routed(settings: Settings, *routes: Route) -> Settings:
    return replace(settings, alerts=replace(settings.alerts, routes=routes))


def vms_of(message: dict) -> list[str]:
    return [s["vm"] for s in message["metadata"]["event_payload"]["sessions"]]


def test_a_group_is_split_between_routes_and_continue_copies_it(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = routed(
        settings_for(em, slack, tmp_path),
        Route("#ops", jobs=("sql*",), vms=("sql*",)),  # the DBA team: SQL VMs of SQL jobs
        Route("#veeam-digest", cont=True),  # everything else here too, and in the default
    )
    outcomes = [("sql01", "Failed", "x"), ("web01", "Failed", "y"), ("sql02", "Warning", "z")]
    job_run(em, now, outcomes, job="SQL Nightly")
    rig = Rig(settings, now)
    try:
        r = rig.pipeline.poll_once(now)
        assert (r.announced, r.pending, r.exit_code) == (3, 0, 0)
        (dba,) = slack.posted("C0OPS")
        assert sorted(vms_of(dba)) == ["sql01", "sql02"]
        (noc,) = slack.posted("C0DIGEST")
        (copy,) = slack.posted("C0ALERTS")
        assert vms_of(noc) == vms_of(copy) == ["web01"]
        assert rig.pipeline.poll_once(now + 5 * M).announced == 0  # each once
        assert len(slack.posted("C0OPS")) == len(slack.posted("C0ALERTS")) == 1
        # web01 succeeds: its alert and its copy both turn green
        job_run(em, now, [("web01", "Success", "")], job="SQL Nightly", ended_ago=-2 * M)
        assert rig.pipeline.poll_once(now + 10 * M).recovered == 1
        (noc,) = slack.posted("C0DIGEST")
        (copy,) = slack.posted("C0ALERTS")
        assert noc["attachments"][0]["color"] == copy["attachments"][0]["color"] == "#2EB67D"
    finally:
        rig.close()


def test_a_repeat_stays_in_its_channel_after_the_routes_change(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = routed(settings_for(em, slack, tmp_path), Route("#ops", jobs=("SQL*",)))
    job_run(em, now, [("sql01", "Failed", "x")], job="SQL Nightly", ended_ago=30 * M)
    rig = Rig(settings, now - 25 * M)
    try:
        assert rig.pipeline.poll_once(now - 25 * M).announced == 1
        (alert,) = slack.posted("C0OPS")
        rig.pipeline.settings = settings_for(em, slack, tmp_path)  # the route is removed
        job_run(em, now, [("sql01", "Failed", "again")], job="SQL Nightly", ended_ago=2 * M)
        assert rig.pipeline.poll_once(now).announced == 1
        (repeat,) = slack.thread(alert["ts"], "C0OPS")
        assert "again" in str(repeat["blocks"])
        assert slack.posted("C0ALERTS") == []  # nothing new where the routes now send it
    finally:
        rig.close()


def test_a_copy_whose_post_failed_goes_out_once_on_the_next_poll(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = routed(settings_for(em, slack, tmp_path), Route("#ops", cont=True))
    rig = Rig(settings, now - 5 * M)
    try:
        rig.pipeline.poll_once(now - 5 * M)  # the channels' IDs are known
        job_run(em, now, [("db01", "Failed", "x")])
        slack.fail_next = [0, 500, 500, 500]  # the alert goes out, its copy does not
        r = rig.pipeline.poll_once(now)
        assert r.exit_code == 2 and len(slack.posted("C0OPS")) == 1
        assert slack.posted("C0ALERTS") == []
        assert rig.pipeline.poll_once(now + 5 * M).exit_code == 0
        (copy,) = slack.posted("C0ALERTS")
        assert vms_of(copy) == ["db01"]
        assert len(slack.posted("C0OPS")) == 1
    finally:
        rig.close()


def test_a_route_with_digest_gets_a_digest_of_what_it_matches(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    from bot.config.render import Renderer
    from bot.digest.run import DigestRunner
    from tests.fake_slack import _texts

    route = Route("#ops", jobs=("SQL*",), digest=True)
    settings = routed(settings_for(em, slack, tmp_path), route)
    job_run(em, now, [("sql01", "Failed", "disk full")], job="SQL Nightly", ended_ago=3 * M)
    job_run(em, now, [("web01", "Failed", "quota")], job="Web Farm", ended_ago=2 * M)
    rig = Rig(settings, now)
    try:
        rig.pipeline.poll_once(now)
        runner = DigestRunner(settings, rig.em, rig.store, rig.notifier, Renderer(), route=route)
        text = "\n".join(_texts(runner.build(now + M, timedelta(hours=24)).blocks))
        assert "SQL Nightly" in text and "sql01" in text
        assert "Web Farm" not in text and "web01" not in text
        assert "*Open problems: 1*" in text  # its own, not the Web Farm's
        later = now.replace(hour=8, minute=5) + timedelta(days=1)  # after 08:00, the default
        runner.run_scheduled(later)
        runner.run_scheduled(later + M)  # once a day
        main = DigestRunner(settings, rig.em, rig.store, rig.notifier, Renderer())
        main.run_scheduled(later)  # the main digest keeps its own record
        digests = [
            m for m in slack.posted("C0OPS") if m["metadata"]["event_type"] == "veeam_digest"
        ]
        assert len(digests) == 1
        assert [
            m for m in slack.posted("C0ALERTS") if m["metadata"]["event_type"] == "veeam_digest"
        ]
    finally:
        rig.close()


def test_a_route_channel_archived_holds_up_no_other_alert(
    em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime
) -> None:
    settings = routed(settings_for(em, slack, tmp_path), Route("#ops", jobs=("SQL*",)))
    rig = Rig(settings, now - 5 * M)
    try:
        rig.pipeline.poll_once(now - 5 * M)  # the channels' IDs are known
        slack.archived.add("C0OPS")  # someone archives the SQL team's channel
        job_run(em, now, [("sql01", "Failed", "x")], job="SQL Nightly", ended_ago=3 * M)
        job_run(em, now, [("web01", "Failed", "y")], job="Web Farm", ended_ago=2 * M)
        r = rig.pipeline.poll_once(now)
        assert r.pending == 1 and r.exit_code == 2 and "is_archived" in r.slack_error
        (web,) = slack.posted("C0ALERTS")  # the other alert went out all the same
        assert vms_of(web) == ["web01"]
        slack.archived.discard("C0OPS")  # unarchived: the held-back alert goes out, once
        r = rig.pipeline.poll_once(now + 5 * M)
        assert (r.pending, r.exit_code) == (0, 0)
        (sql,) = slack.posted("C0OPS")
        assert vms_of(sql) == ["sql01"] and len(slack.posted("C0ALERTS")) == 1
    finally:
        rig.close()
