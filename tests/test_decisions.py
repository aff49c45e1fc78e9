"""Every pure decision of the alert path, pinned by a table: what is new, what goes
together, what is alertable, what kind an EM failure is, what a Slack error means, where a
window starts, what a poll plans, what the retry hold does, and self-monitoring's next step.
Each is a function of data and `now`; the scenario tests cover the effects."""

from __future__ import annotations

import urllib.error
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

from bot.alerts.compose import group_sessions
from bot.alerts.fetch import alertable, error_kind, window_start
from bot.alerts.problems import Problem, hold, identity, opened_by, plan
from bot.alerts.select import decide
from bot.alerts.source import step
from bot.config.settings import PollSettings, Settings
from bot.errors import AuthError, EMRejected, EMUnavailable, ParseError, SourceError
from bot.models import TaskSession
from bot.slack.codes import classify, gone

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def s(uid: str, minute: int | None = 0, *, result: str = "Failed", vm: str = "vm1",
      jsu: str = "js1", state: str = "Completed") -> TaskSession:  # fmt: skip
    ended = T + minute * M if minute is not None else None
    return TaskSession(uid, "ReplicaTaskSession", f"{vm}@x", vm, "Job", jsu, "srv", state,
                       result, "", T - 60 * M, ended, 0)  # fmt: skip


@pytest.mark.parametrize(
    ("announced", "pending", "expected"),
    [(False, False, "first"), (True, False, "repeat"), (False, True, "pending"),
     (True, True, "repeat")],
)  # fmt: skip
def test_decide(announced: bool, pending: bool, expected: str) -> None:
    assert decide(announced, pending) == expected


@pytest.mark.parametrize(
    ("sessions", "expected"),
    [
        ([], []),
        # one job session, oldest end first within it
        ([s("b", 5), s("a", 1)], [["a", "b"]]),
        # two job sessions: the group whose first failure ended first goes first
        ([s("x", 9, jsu="j2"), s("y", 2, jsu="j1"), s("z", 1, jsu="j2")],
         [["z", "x"], ["y"]]),
        # no job session UID: each session is a group of its own
        ([s("p", 3, jsu=""), s("q", 1, jsu="")], [["q"], ["p"]]),
        # a session still running (no end) sorts first
        ([s("r", 4), s("n", None)], [["n", "r"]]),
        # 41 VMs of one job session: 40 in the first message, 1 in the second
        ([s(f"u{i:02}", i, vm=f"vm{i}") for i in range(41)],
         [[f"u{i:02}" for i in range(40)], ["u40"]]),
    ],
)  # fmt: skip
def test_group_sessions(sessions: list[TaskSession], expected: list[list[str]]) -> None:
    assert [[x.uid for x in g] for g in group_sessions(sessions)] == expected


@pytest.mark.parametrize(
    ("session", "expected"),
    [
        (s("a", 0), True),
        (s("a", 0, result="Warning"), True),
        (s("a", 0, result="Success"), False),  # a result that is not watched
        (s("a", 0, state="Working"), False),  # not completed
        (s("a", -1), False),  # ended before the window
        (s("a", None), True),  # EM listed it as completed without an end: not left out
    ],
)
def test_alertable(session: TaskSession, expected: bool) -> None:
    assert alertable(session, ("Failed", "Warning"), T) is expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (EMUnavailable("connection refused"), "em_unreachable"),
        (EMRejected("server error", 503), "em_unreachable"),  # a 5xx passes with time
        (EMRejected("bad filter", 400), "em_rejected"),
        (AuthError("401"), "em_rejected"),
        (ParseError("not XML"), "em_error"),
        (SourceError("other"), "em_error"),
    ],
)
def test_error_kind(exc: SourceError, expected: str) -> None:
    assert error_kind(exc) == expected


def api(status: int, error: str = "", headers: dict[str, str] | None = None) -> SlackApiError:
    data: dict[str, Any] = {"ok": False, **({"error": error} if error else {})}
    url = "https://slack.test/api/chat.postMessage"
    response = SlackResponse(client=None, http_verb="POST", api_url=url, req_args={},
                             data=data, headers=headers or {}, status_code=status)  # fmt: skip
    return SlackApiError("failed", response)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (api(429, "ratelimited"), (True, False, False, "ratelimited", False, "rate-limiting")),
        (api(503), (True, True, False, "http_503", False, "HTTP 503")),
        (api(200, "invalid_auth"), (False, False, False, "invalid_auth", False, "SLACK_BOT_TOKEN")),
        (api(200, "msg_too_long"), (False, False, True, "msg_too_long", False, "content")),
        (api(200, "not_in_channel"), (False, False, False, "not_in_channel", True, "invite")),
        (api(200, "thread_not_found"), (False, False, False, "thread_not_found", True, "refused")),
        (api(200, "is_archived"), (False, False, False, "is_archived", True, "C1")),
        (api(200, "restricted_action"), (False, False, False, "restricted_action", False, "C1")),
        (urllib.error.URLError(ConnectionRefusedError(111, "refused")),
         (True, False, False, "connection", False, "cannot reach")),
        (TimeoutError("timed out"), (True, True, False, "connection", False, "lost the")),
    ],
)  # fmt: skip
def test_classify(exc: Exception, expected: tuple[Any, ...]) -> None:
    """(retryable, outcome unknown, content refused, code, gone for one problem, words)."""
    got = classify(exc, "C1")
    flags = (got.retryable, got.outcome_unknown, got.content, got.code, gone(got))
    assert flags == expected[:5] and expected[5] in str(got)


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [(None, T - 24 * 60 * M),  # first run: now minus initial_lookback
     (T - 10 * M, T - 40 * M),  # checkpoint minus overlap
     (T + 5 * M, T - 25 * M)],  # a checkpoint ahead of the clock still overlaps
)  # fmt: skip
def test_window_start(checkpoint: datetime | None, expected: datetime) -> None:
    settings = Settings(poll=PollSettings(initial_lookback=24 * 60 * M, overlap=30 * M))
    assert window_start(checkpoint, T, settings) == expected


def problems(*vms: str, state: str = "open", minute: int = 0) -> dict[str, Problem]:
    out = {}
    for vm in vms:
        first = s("old-" + vm, minute, vm=vm)
        pid = identity("em", first)
        out[pid] = opened_by(pid, first, "C1", "1.0")
        if state != "open":
            out[pid] = Problem(**{**out[pid].to_json(), "state": state})
    return out


# (uid, minute[, vm]) of failures and successes → (firsts, repeats, recoveries, folded)
@pytest.mark.parametrize(
    ("failures", "successes", "known", "expected"),
    [
        # three failures of one VM in one poll: one alert, two folded into it
        ([("f1", 1), ("f2", 5), ("f3", 9)], [], {}, (["f1"], [], [], ["f2", "f3"])),
        # two VMs: two alerts, nothing folded
        ([("f1", 1), ("g1", 2, "vm2")], [], {}, (["f1", "g1"], [], [], [])),
        # fail, fail, succeed in one poll: one alert, one folded, recovered
        ([("f1", 1), ("f2", 5)], [("s1", 9)], {}, (["f1"], [], ["s1"], ["f2"])),
        # fail, succeed, fail: the last failure stands, no recovery
        ([("f1", 1), ("f2", 9)], [("s1", 5)], {}, (["f1"], [], [], ["f2"])),
        # an open problem: repeats, never folded
        ([("f1", 1), ("f2", 5)], [], problems("vm1"), ([], ["f1", "f2"], [], [])),
        # a recovered problem fails again: a new alert
        ([("f1", 1), ("f2", 3)], [], problems("vm1", state="recovered"), (["f1"], [], [], ["f2"])),
    ],
)  # fmt: skip
def test_plan_with_folded(
    failures: list[tuple[Any, ...]], successes: list[tuple[Any, ...]],
    known: dict[str, Problem], expected: tuple[list[str], ...],
) -> None:  # fmt: skip
    p = plan("em", [s(u, m, vm=(v or ["vm1"])[0]) for u, m, *v in failures],
             [s(u, m, result="Success") for u, m in successes], known)  # fmt: skip
    got = ([x.uid for x in p.firsts], [x.uid for x in p.repeats],
           [x.uid for _, x in p.recoveries], [x.uid for x in p.folded])  # fmt: skip
    assert got == expected


# failures of vm1 and successes of vm1 or vm2 ("s2-…"; vm2's problem is open from an earlier
# poll), minutes since T, and now → every list of the hold's split
@pytest.mark.parametrize(
    ("failed", "succeeded", "now", "expected"),
    [
        # a retry succeeded within the hold: fixed, and its recovery is not told
        ([0], [15], 20, {"fixed": ["f0"]}),
        # a Success seen in the same poll settles the failure, whenever it came (a bot that
        # was down through the end of the hold sees both at once)
        ([0], [45], 50, {"fixed": ["f0"]}),
        # fail, fail again, succeed, all within the hold: both fixed, nothing told
        ([0, 10], [20], 25, {"fixed": ["f0", "f10"]}),
        # fail twice past the hold: one alert, one folded into it
        ([0, 10], [], 55, {"announce": ["f0"], "folded": ["f10"]}),
        # fail twice, still within the hold: both wait
        ([0, 10], [], 30, {"wait": ["f0", "f10"]}),
        # an open problem of another VM recovers whatever the hold does with vm1
        ([0], ["s2-5"], 10, {"wait": ["f0"], "recoveries": ["s2-5"]}),
        ([0], ["s2-5"], 45, {"announce": ["f0"], "recoveries": ["s2-5"]}),
        ([0], [15, "s2-5"], 20, {"fixed": ["f0"], "recoveries": ["s2-5"]}),
        # nothing failed, the open problem recovers: the hold passes it on
        ([], ["s2-5"], 10, {"recoveries": ["s2-5"]}),
    ],
)  # fmt: skip
def test_hold_with_recoveries(
    failed: list[int], succeeded: list[int | str], now: int, expected: dict[str, list[str]]
) -> None:
    ok = [s(f"s{m}", m, result="Success") if isinstance(m, int)
          else s(m, 5, result="Success", vm="vm2") for m in succeeded]  # fmt: skip
    todo = plan("em", [s(f"f{m}", m) for m in failed], ok, problems("vm2"))
    split = hold("em", todo, T + now * M, 40 * M)
    got = {
        "announce": [x.uid for x in split.announce], "wait": [x.uid for x in split.wait],
        "fixed": [x.uid for x in split.fixed], "folded": [x.uid for x in split.folded],
        "recoveries": [x.uid for _, x in split.recoveries],
    }  # fmt: skip
    assert got == {k: expected.get(k, []) for k in got}


AFTER = 15 * M
E = T.timestamp()


# stored state, this poll's EM error, minutes since T → (action, the whole state to store)
@pytest.mark.parametrize(
    ("state", "error", "minute", "action", "stored"),
    [
        (None, "", 0, "none", None),
        (None, "refused", 0, "none", {"since": E, "error": "refused"}),
        ({"since": E, "error": "a"}, "b", 14, "none", {"since": E, "error": "b"}),
        ({"since": E, "error": "a"}, "b", 15, "post",
         {"since": E, "error": "b", "posting": E + 900}),
        # a post that was cut short keeps its first attempt's time
        ({"since": E, "error": "a", "posting": E + 900}, "b", 20, "post",
         {"since": E, "error": "b", "posting": E + 900}),
        ({"since": E, "error": "a", "ts": "1.0"}, "b", 60, "none",
         {"since": E, "error": "b", "ts": "1.0"}),
        ({"since": E, "error": "a"}, "", 10, "forget", None),
        ({"since": E, "error": "a", "ts": "1.0"}, "", 30, "back",
         {"since": E, "error": "a", "ts": "1.0", "back_at": E + 1800}),
        # a post under way when EM came back: the reply still follows it
        ({"since": E, "error": "a", "posting": E + 900}, "", 30, "back",
         {"since": E, "error": "a", "posting": E + 900, "back_at": E + 1800}),
        # down again before "back" was told: "back" first, with the newest error
        ({"since": E, "error": "a", "ts": "1.0", "back_at": E + 60}, "c", 2, "back",
         {"since": E, "error": "c", "ts": "1.0", "back_at": E + 60}),
    ],
)  # fmt: skip
def test_source_step_whole_state(
    state: dict[str, Any] | None, error: str, minute: int, action: str,
    stored: dict[str, Any] | None,
) -> None:  # fmt: skip
    got = step(state, error, T + minute * M, AFTER)
    assert (got.action, got.state) == (action, stored)
