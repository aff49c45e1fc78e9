"""The start-up check of every template, overrides included, against sample sessions.

Compiling catches a syntax error; only rendering catches an override that breaks on some
data (an undefined name under StrictUndefined, a filter on an empty value). The samples are
the data that breaks templates in the field: hostile names, an empty Reason, a running
session with no end time, and a 40-VM group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial

from markupsafe import Markup

from bot.alerts.joblist import JobRow
from bot.alerts.jobmessage import job_alert, job_closed, jobs_summary
from bot.alerts.message import (
    alert_message,
    catchup_message,
    problem_status,
    recovery_message,
    repeat_message,
)
from bot.alerts.mutes import Mute
from bot.alerts.problems import Problem, identity, opened_by, recovered
from bot.alerts.stale import Condition
from bot.config.render import Renderer
from bot.digest.build import ProblemDigest, Summary, digest_message, unavailable_message
from bot.digest.strip import DayStrip
from bot.errors import ConfigError
from bot.models import JobSession, TaskSession
from bot.slash.answers import Status, help_reply, query_reply, session_reply, status_reply
from bot.slash.lookup import Answer

SAMPLE_TIME = datetime(2026, 1, 15, 3, 0, tzinfo=UTC)
HOSTILE = '<!channel> & <@U123> {{ x }} "quoted" \\ 数据库 ' + "x" * 200


def _session(n: int, **kw: object) -> TaskSession:
    base: dict[str, object] = {
        "uid": f"urn:veeam:ReplicaTaskSession:00000000-0000-4000-8000-{n:012d}",
        "type": "ReplicaTaskSession",
        "name": f"vm-{n}@2026-01-15 02:00:00",
        "vm": f"vm-{n}",
        "job": "Replication Job 1",
        "job_session_uid": "urn:veeam:ReplicaJobSession:00000000-0000-4000-8000-000000000001",
        "server": "vbr01.example.local",
        "state": "Completed",
        "result": "Failed",
        "reason": "Error: There is not enough space on the disk.\nFailed to write data.",
        "created": SAMPLE_TIME - timedelta(hours=1),
        "ended": SAMPLE_TIME,
        "total_size": 8589934592,
    }
    base.update(kw)
    return TaskSession(**base)  # type: ignore[arg-type]


def _job_level(n: int, **kw: object) -> TaskSession:
    """A job session's own failure: no VM, its UID its job session's."""
    uid = f"urn:veeam:BackupJobSession:00000000-0000-4000-8000-{n:012d}"
    base: dict[str, object] = {"uid": uid, "job_session_uid": uid, "vm": "", "total_size": 0,
                               "type": "BackupTaskSession", "name": f"File share@{n}"}  # fmt: skip
    return _session(n, **{**base, **kw})


def sample_sessions() -> dict[str, list[TaskSession]]:
    """Named groups of sessions, each the content of one alert."""
    return {
        "a failure": [_session(1)],
        "hostile names": [_session(2, vm=HOSTILE, job=HOSTILE, server=HOSTILE, reason=HOSTILE)],
        "an empty Reason": [_session(3, result="Warning", reason="")],
        "a running session": [
            _session(4, state="InProgress", result="None", ended=None, reason="", total_size=0)
        ],
        "a job-level failure": [_job_level(5, kind="NasBackup", reason="")],
        "a job-level failure with hostile names": [
            _job_level(6, job=HOSTILE, server=HOSTILE, reason=HOSTILE, kind=HOSTILE)
        ],
        "a 40-VM group": [
            _session(100 + i, result=("Failed", "Warning")[i % 2]) for i in range(40)
        ],
    }


def _problem(s: TaskSession, count: int = 3) -> Problem:
    p = opened_by(identity("em.example.local", s), s, "C0123", "1700000000.000100")
    return replace(p, count=count, last_end=p.opened + 3600)


def _statuses(group: list[TaskSession]) -> dict[str, Markup]:
    out = {}
    for n, s in enumerate(group):
        p = _problem(s, count=1 + n % 3)
        out[s.uid] = problem_status(recovered(p, s) if n % 2 else p)
    return out


def _problem_digest() -> ProblemDigest:
    group = sample_sessions()["hostile names"] + sample_sessions()["a 40-VM group"][:3]
    problems = [_problem(s) for s in group]
    problems[-1] = recovered(problems[-1], group[-1])
    mute = Mute("m1", "vm", HOSTILE, HOSTILE, SAMPLE_TIME.timestamp(), HOSTILE, "U1", 0.0)
    return ProblemDigest(
        problems[:-1],
        problems[-1:],
        [mute, replace(mute, by="x", reason="")],
        named=True,
        down=[("em-east", SAMPLE_TIME, HOSTILE), ("em-west", None, "cannot reach EM")],
    )


def _renders(r: Renderer) -> list[tuple[str, Callable[[], object]]]:
    samples = sample_sessions()
    everyone = [s for group in samples.values() for s in group]
    summary = Summary(SAMPLE_TIME - timedelta(days=1), SAMPLE_TIME + timedelta(seconds=1))
    for s in everyone:
        if s.job_level:
            summary.add_run(s)
        else:
            summary.add(s)
    summary.add(_session(999, result="Success", reason=""))
    status = Status(SAMPLE_TIME, "ok", "reachable", 3, 0, "0")
    out: list[tuple[str, Callable[[], object]]] = []
    for label, group in samples.items():
        out += [
            (f"an alert for {label}", partial(alert_message, r, group)),
            (
                f"an alert for {label}, listed late",
                partial(alert_message, r, group, late_by=3 * 3600.0, decision="redelivery"),
            ),
            (f"/veeam session for {label}", partial(session_reply, r, group[0], share=False)),
            (
                f"an updated alert for {label}",
                partial(alert_message, r, group, status=_statuses(group), recovered=True),
            ),
            (
                f"a repeat in the thread for {label}",
                partial(repeat_message, r, group[0], _problem(group[0]), broadcast=True),
            ),
            (
                f"a recovery in the thread for {label}",
                partial(recovery_message, r, group[0], _problem(group[0])),
            ),
        ]
    answer = Answer(everyone, len(everyone) + 5, {"ReplicaTaskSession": 'Result=="Failed"'})
    empty = Answer([], 0, {"ReplicaTaskSession": 'Result=="Failed"'})
    out += [
        ("a /veeam answer", lambda: query_reply(r, answer, "failed vm:x", share=False)),
        ("an empty /veeam answer", lambda: query_reply(r, empty, "", share=False)),
        ("a catch-up message", lambda: catchup_message(r, everyone, "sample")),
        ("/veeam help", lambda: help_reply(r)),
        ("/veeam status", lambda: status_reply(r, status)),
        ("/veeam status before a poll", lambda: status_reply(r, Status(None, "", "?", 0, 0, "0"))),
        (
            "the digest",
            lambda: digest_message(
                r,
                summary,
                {"Success": 1, "Warning": 0, "Failed": 9},
                "UTC",
                _problem_digest(),
                strip=_strip(),
                stopped=_stopped(),
            ),
        ),
        (
            "an empty digest",
            lambda: digest_message(r, Summary(SAMPLE_TIME, SAMPLE_TIME), None, "UTC"),
        ),
        ("digest unavailable", lambda: unavailable_message(r, HOSTILE, SAMPLE_TIME)),
        *[(f"a job {c.kind} alert", partial(job_alert, r, c, SAMPLE_TIME)) for c in _episodes()],
        ("a job's closing reply", lambda: job_closed(r, "k", HOSTILE, HOSTILE, "1.0")),
        ("jobs not running, in one message", lambda: jobs_summary(r, _episodes() * 10, "b")),
    ]
    return out


def _episodes() -> list[Condition]:
    """One job of each kind that stopped running, with hostile names; empty details too."""
    day = timedelta(days=1)
    stale = {"last_success": SAMPLE_TIME - 3 * day, "expected_every": 2 * day,
             "next_run": SAMPLE_TIME + day}  # fmt: skip
    running = {"job_session_uid": HOSTILE, "started": SAMPLE_TIME - day, "usual": None}
    return [
        Condition("k1", "stale", HOSTILE, HOSTILE, HOSTILE, stale),
        Condition("k2", "stale", "Job", "srv", "", {"last_success": None, "next_run": None}),
        Condition("k3", "disabled", HOSTILE, HOSTILE, "", {"last_run": None}),
        Condition("k4", "running", HOSTILE, HOSTILE, "", running),
    ]


def _stopped() -> list[JobRow]:
    """Jobs that stopped running: one of each kind, a hostile name, and 20 more."""
    rows = [
        JobRow("em-east", HOSTILE, HOSTILE, ("running",), "", None, None, None, None, True),
        JobRow("", "Nightly SQL", "vbr01", ("stale", "failing"), "Failed", SAMPLE_TIME,
               SAMPLE_TIME - timedelta(days=3), SAMPLE_TIME, timedelta(days=2), True),
        JobRow("", "Archive", "vbr01", ("disabled",), "Success", SAMPLE_TIME, SAMPLE_TIME,
               None, None, False),
    ]  # fmt: skip
    return rows + [replace(rows[1], job=f"Job {n}") for n in range(20)]


def _strip() -> DayStrip:
    """Seven days of a failing job with a hostile name, one that stopped, and 40 more."""
    strip = DayStrip(SAMPLE_TIME, "UTC")
    runs = [(HOSTILE, "Failed"), ("Stopped job", "Success")] + [
        (f"Job {n}", "Success") for n in range(40)
    ]
    for n, (job, result) in enumerate(runs):
        ended = SAMPLE_TIME - timedelta(days=n % 7, hours=1)
        strip.add(JobSession(f"urn:veeam:BackupJobSession:{n}", "BackupJobSession", job, job,
                             "urn:veeam:Job:1", "Backup", "srv", "Stopped", result, "", False,
                             100, ended, ended), job)  # fmt: skip
    return strip


def check_templates(r: Renderer) -> int:
    """Render every message the bot sends from the samples; a failing template is a
    configuration error naming the template, the line and the sample. Returns how many
    messages were rendered."""
    problems: list[str] = []
    r.strict = True
    count = 0
    try:
        for label, render in _renders(r):
            count += 1
            try:
                render()
            except ConfigError as exc:
                problems += [f"{p} (rendering {label})" for p in exc.problems]
    finally:
        r.strict = False
    if problems:
        raise ConfigError(sorted(set(problems), key=problems.index))
    return count
