"""Slack's real message limits: oversized alerts, refused content, and no accidental pings."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from bot.config.render import TEXT_BUDGET
from bot.emulator.server import Emulator
from tests.fake_slack import FakeSlack, _texts
from tests.helpers import Rig, job_run

LONG_REASON = (
    "Error: Failed to replicate disk 'Hard disk 1' <!channel> @here #general "
    "https://evil.example/x & more\n" + "Processing finished with errors. " * 60
)


def chars(message: dict[str, Any]) -> int:
    return sum(len(t) for t in _texts(message["blocks"]) + _texts(message["attachments"]))


def mrkdwn_objects(obj: Any) -> Iterator[dict[str, Any]]:
    if isinstance(obj, list):
        for item in obj:
            yield from mrkdwn_objects(item)
    elif isinstance(obj, dict):
        if obj.get("type") == "mrkdwn":
            yield obj
        for v in obj.values():
            yield from mrkdwn_objects(v)


def test_a_40_vm_group_with_long_reasons_fits_and_points_to_the_whole_reason(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    run = job_run(em, now, [(f"vm-{i:02d}", "Failed", LONG_REASON) for i in range(40)])
    r = rig.pipeline.poll_once(now)
    assert (r.announced, r.pending, r.exit_code) == (40, 0, 0)
    (msg,) = slack.posted()
    assert chars(msg) + len(msg["text"]) <= TEXT_BUDGET
    body = "\n".join(_texts(msg["attachments"]))
    for s in run:
        assert f"*{s.vm}*" in body
        assert f"/veeam session {s.uid.rsplit(':', 1)[-1]}" in body
    assert "Processing finished with errors" not in body  # only the first line
    assert "&lt;!channel&gt;" in body and "<!channel>" not in body


def test_hostile_long_names_in_a_40_vm_group_still_fit(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    outcomes = [("<@U1>&" * 40 + f"{i}", "Warning", LONG_REASON * 3) for i in range(40)]
    job_run(em, now, outcomes, job="<!here> & " * 30)
    r = rig.pipeline.poll_once(now)
    assert (r.announced, r.exit_code) == (40, 0)
    assert all(chars(m) <= TEXT_BUDGET for m in slack.posted())


def test_refused_content_is_sent_again_at_once_in_a_minimal_form(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    """Should Slack's limit be lower still, the content error is never retried as it is:
    the same alert goes out at once as a header and a VM list, without Reasons."""
    slack.text_limit = 2000
    run = job_run(em, now, [(f"vm-{i:02d}", "Failed", LONG_REASON) for i in range(12)])
    r = rig.pipeline.poll_once(now)
    assert (r.announced, r.pending, r.exit_code) == (12, 0, 0)
    (msg,) = slack.posted()
    assert sorted(slack.announced_uids()) == sorted(s.uid for s in run)
    body = "\n".join(_texts(msg["blocks"]))
    assert all(f"*{s.vm}*" in body for s in run)
    assert "Failed to replicate" not in body
    assert len(slack.method_calls("chat.postMessage")) == 2  # the full form once, then this


def test_even_the_minimal_form_refused_leaves_the_fallback_text(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    slack.text_limit = 10
    (s,) = job_run(em, now, [("sql01", "Failed", LONG_REASON)])
    r = rig.pipeline.poll_once(now)
    assert (r.announced, r.exit_code) == (1, 0)
    (msg,) = slack.posted()
    assert msg["blocks"] == [] and "sql01" in msg["text"]
    assert slack.announced_uids() == [s.uid]


def test_every_mrkdwn_text_with_em_text_is_verbatim(
    rig: Rig, em: Emulator, slack: FakeSlack, now: datetime
) -> None:
    """Bare @here, #channel names and URLs in VM names and Reasons stay plain text."""
    job_run(em, now, [("@here", "Failed", "see https://x.example #general @channel")])
    job_run(
        em,
        now,
        [("#general", "Failed", LONG_REASON), ("www.evil.example", "Warning", "@here")],
        job="@channel job",
    )
    rig.pipeline.poll_once(now)
    slack.text_limit = 500  # the minimal form too
    job_run(em, now, [(f"@here-{i}", "Failed", LONG_REASON) for i in range(5)], job="J3")
    rig.pipeline.poll_once(now)
    posted = slack.posted()
    assert len(posted) == 3
    objects = [o for m in posted for o in mrkdwn_objects(m["blocks"] + m["attachments"])]
    assert len(objects) >= 8
    assert all(o.get("verbatim") is True for o in objects)
    for call in slack.method_calls("chat.postMessage"):
        assert call.get("parse") == "none"  # nor in the fallback text
