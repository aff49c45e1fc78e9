"""`/veeam` through the real Bolt app over HTTP (waitress), with signed requests, the
emulator as EM and the fake Slack's response_url."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

import pytest

from bot import __version__
from bot.alerts.inventory import Inventory
from bot.config.render import Message, Renderer, section
from bot.config.settings import (
    ActionSettings,
    AlertSettings,
    JobsSettings,
    MuteSettings,
    Route,
    Secret,
    Settings,
    SlackSettings,
    SlashSettings,
    Window,
)
from bot.emulator.data import SessionStore, generate
from bot.emulator.filterlang import Comparison, Group, parse_filter
from bot.emulator.jobs import EmJob
from bot.emulator.server import Emulator
from bot.slack.client import Pacer, web_client
from bot.slack.surface import Surface, bolt_app
from bot.slack.web import SlackNotifier
from bot.slash.buttons import register_buttons
from bot.slash.commands import SlashDeps, SlashPool, register
from bot.slash.home import register_home
from bot.slash.retry import register_retry
from bot.store.schema import MUTES
from bot.store.store import Store
from bot.veeam.client import EMClient
from tests.conftest import veeam_settings
from tests.fake_slack import (
    TOKEN,
    FakeSlack,
    _texts,
    signed_action,
    signed_command,
    signed_event,
)
from tests.helpers import job_only, job_run

SECRET = "test-signing-secret"
M, H = timedelta(minutes=1), timedelta(hours=1)


@dataclass
class Bot:
    url: str
    em: Emulator
    slack: FakeSlack
    store: Store
    deps: SlashDeps

    def send(
        self,
        text: str,
        *,
        user: str = "U1",
        channel: str = "C0OPS",
        secret: str = SECRET,
        age: int = 0,
        hook: str = "",
    ) -> tuple[int, str, float]:
        """POST a signed slash command; returns (status, body, seconds to the answer)."""
        fields = {
            "token": "legacy", "team_domain": "corp", "channel_id": channel,
            "channel_name": "ops", "user_id": user, "user_name": "admin", "text": text,
            "response_url": self.slack.hook_base + (hook or "h1"), "trigger_id": "1.2.3",
            "api_app_id": "A1",
        }  # fmt: skip
        req = signed_command(self.url, secret, fields, age=age)
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode(), time.monotonic() - started
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(), time.monotonic() - started

    def answer(self, hook: str = "h1", timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, payload in self.slack.hooks:
                if name == hook:
                    return payload
            time.sleep(0.02)
        raise AssertionError(f"no answer on response_url {hook}")


def blocks_text(payload: dict[str, Any]) -> str:
    return "\n".join(b["text"]["text"] for b in payload.get("blocks", []) if "text" in b)


@pytest.fixture
def bot(tmp_path: Path, now: datetime, request: pytest.FixtureRequest) -> Iterator[Bot]:
    emu = Emulator(SessionStore(generate(400, now=now, seed=4))).start()
    slack = FakeSlack().start()
    settings = Settings(
        veeam=veeam_settings(emu),
        alerts=AlertSettings(channel="C0ALERTS"),
        slack=SlackSettings(
            bot_token=Secret(TOKEN), signing_secret=Secret(SECRET), api_url=slack.url
        ),
        slash=SlashSettings(allowed_channels=("C0OPS", "C0ALERTS"), allowed_users=()),
        state_path=str(tmp_path / "state.sqlite"),
        port=0,
    )
    em = EMClient(settings.veeam)
    store = Store(settings.state_path, now=now)
    marker = request.node.get_closest_marker("pool")  # pool(workers, queue)
    pool = SlashPool(*(marker.args if marker else (4,)))
    app = bolt_app(settings, web_client(TOKEN, slack.url))
    notifier = SlackNotifier(web_client(TOKEN, slack.url), Pacer(0, 1))
    deps = SlashDeps(
        settings,
        em,
        store,
        Renderer(),
        pool,
        lambda: datetime.now(UTC),
        announce=lambda line: notifier.post("C0ALERTS", Message(line, [section(line)])),
        announce_in=lambda channel, line: notifier.post(channel, Message(line, [section(line)])),
    )
    register(app, deps)
    register_buttons(app, deps)
    register_home(app, deps)
    register_retry(app, deps)
    surface = Surface(settings, app, host="127.0.0.1")
    surface.start()
    yield Bot(f"http://127.0.0.1:{surface.port}/slack/events", emu, slack, store, deps)
    surface.stop()
    pool.shutdown(wait=True)
    em.close()
    store.close()
    slack.stop()
    emu.stop()


def test_query_is_acked_then_answered_on_response_url(bot: Bot) -> None:
    status, body, _took = bot.send("failed warning since:7d limit:5")
    assert (status, body) == (200, "")  # the ack says nothing; its latency: bench/
    answer = bot.answer()
    assert answer["response_type"] == "ephemeral"
    text = blocks_text(answer)
    assert "*/veeam failed warning since:7d limit:5*" in text
    assert "showing 5 of" in text
    assert (
        'EM filter (ReplicaTaskSession): `(Result=="Failed",Result=="Warning");CreationTime&gt;="'
        in text
    )
    assert text.count("<!date^") >= 5
    assert len(answer["blocks"]) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in answer["blocks"])


def test_share_posts_in_channel(bot: Bot) -> None:
    bot.send("failed share since:14d")
    assert bot.answer()["response_type"] == "in_channel"


def test_help_is_answered_in_the_ack(bot: Bot) -> None:
    status, body, _ = bot.send("help")
    assert status == 200
    assert "/veeam session &lt;UID&gt;" in body and "since:" in body
    assert bot.em.queries() == []


def test_session_shows_the_full_reason(bot: Bot) -> None:
    long = next(s for s in bot.em.store.all() if len(s.reason) > 3000)
    bot.send(f"session {long.uid}")
    answer = bot.answer()
    text = blocks_text(answer)
    assert long.vm.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in text
    assert "truncated" not in text
    reason_text = "".join(b["text"]["text"] for b in answer["blocks"][1:])
    assert reason_text.replace("*Reason:*\n", "").replace("\n", "") == long.reason.replace("\n", "")
    assert len(answer["blocks"]) >= 3
    assert all(len(b["text"]["text"]) <= 3000 for b in answer["blocks"])


def test_unknown_session(bot: Bot) -> None:
    bot.send("session urn:veeam:ReplicaTaskSession:00000000-0000-4000-8000-000000000000")
    assert "EM has no session" in blocks_text(bot.answer())


def test_session_shows_a_job_session_a_job_level_alert_names(bot: Bot, now: datetime) -> None:
    js = job_only(now, failure="")
    bot.em.jobs.add([js])
    bot.send(f"session {js.uid}")
    text = blocks_text(bot.answer())
    assert "*Projects share (file share backup)* · Failed" in text
    assert "*Type:* File share backup" in text and f"*Job session:* {js.uid}" in text


def test_jobs_lists_the_inventory_worst_first_and_filters(bot: Bot, now: datetime) -> None:
    uid = "urn:veeam:Job:0badc0de-0000-4000-8000-00000000051a"
    bot.em.job_list.add([EmJob(uid, "Stopped <job> & co", "Replica", "VMware", "vbr01",
                               "urn:veeam:BackupServer:1", next_run=now - 3 * H)])  # fmt: skip
    inventory = Inventory(bot.deps.settings, bot.deps.em, bot.store)
    inventory.keep(now, *inventory.read(now))  # what the poll's refresh keeps
    bot.send("jobs")
    every = blocks_text(bot.answer())
    rows = [r for r in every.split("\n") if r.strip()][1:]
    (mine,) = [r for r in rows if "Stopped" in r]
    assert mine.startswith("⏳ *Stopped &lt;job&gt; &amp; co* (vbr01)")  # escaped, marked
    assert "last success never" in mine and "no run seen" in mine
    marks = [r.split(" ", 1)[0] for r in rows]
    assert marks == sorted(marks, key=lambda m: m != "⏳")  # the stale ones first
    assert "known · worst first" in every
    bot.send("jobs stale", hook="h2")
    stale = blocks_text(bot.answer("h2"))
    assert re.match(r"\*\d+ stale jobs?\* of \d+ known", stale) and "Stopped &lt;job&gt;" in stale
    assert all(r.startswith("⏳") for r in stale.split("\n")[1:] if r.strip())
    bot.send("jobs running", hook="h3")
    assert "No running jobs right now" in blocks_text(bot.answer("h3"))
    _, body, _ = bot.send("jobs sometimes", hook="h4")  # answered in the ack
    assert "usage: /veeam jobs [stale|disabled|running|failing]" in body
    bot.send("jobs em:nowhere", hook="h5")
    assert "em:nowhere is not an Enterprise Manager the bot watches" in blocks_text(
        bot.answer("h5")
    )
    jobs_queries = [q for q in bot.em.queries() if q.params.get("type") == "Job"]
    assert len(jobs_queries) == 1  # the answers come from the inventory, not from EM


def test_forged_signature_and_stale_timestamp_get_401(bot: Bot) -> None:
    assert bot.send("failed", secret="not-the-secret")[0] == 401
    assert bot.send("failed", age=301)[0] == 401
    assert bot.em.queries() == []
    assert bot.send("failed", age=200)[0] == 200


def test_bad_word_gets_usage_naming_it(bot: Bot) -> None:
    status, body, _ = bot.send("faild since:7d")
    assert status == 200
    assert "unknown word 'faild'" in body and "usage:" in body
    assert "Traceback" not in body
    assert bot.em.queries() == []


@pytest.mark.parametrize(
    "value",
    ["a;Result==Success", 'say "hi"', "web,frontend", "db (primary)", "x),(Result==Success"],
)
def test_hostile_values_reach_em_only_as_quoted_literals(bot: Bot, value: str) -> None:
    word = 'vm:"' + value.replace('"', '\\"') + '"'
    bot.send(f"{word} since:14d")
    bot.answer()
    node = parse_filter(bot.em.queries()[-1].params["filter"])
    assert isinstance(node, Group) and node.kind == "and"
    vm = [t for t in node.parts if isinstance(t, Comparison) and t.field == "vmdisplayname"]
    assert [(t.op, t.value) for t in vm] == [("==", value)]
    assert len(node.parts) == 2  # the VM term and the since: term, nothing smuggled in


def test_ack_stays_fast_while_em_takes_5_seconds(bot: Bot) -> None:
    bot.em.delay = 5
    status, _, _took = bot.send("failed since:1d")
    assert status == 200
    assert not bot.slack.hooks, "acked before EM answered, not after"
    answer = bot.answer(timeout=30)
    assert "match" in blocks_text(answer)


def test_em_down_is_one_sentence(bot: Bot) -> None:
    bot.em.fail_queries.extend([503] * 6)  # every attempt fails
    bot.send("failed")
    text = blocks_text(bot.answer())
    assert text.startswith("EM rejected the query: Service temporarily unavailable")
    assert "Traceback" not in text and "\n" not in text


def test_allow_lists_refuse_politely_and_run_nothing(bot: Bot) -> None:
    status, body, _ = bot.send("failed", channel="C0ELSEWHERE")
    assert status == 200 and "not enabled for you in this channel" in body
    assert bot.em.queries() == []


def test_status(bot: Bot) -> None:
    bot.send("status")
    text = blocks_text(bot.answer())
    assert "*Last poll:* none yet" in text
    assert "*Enterprise Manager:* reachable" in text
    assert "*Pending deliveries:* 0" in text and f"*Version:* {__version__}" in text


def test_command_text_arrives_escaped_and_is_read_as_characters(bot: Bot, now: datetime) -> None:
    """Slack sends `&`, `<` and `>` in command text as entities: `vm:"R&D lab"` arrives as
    `vm:"R&amp;D lab"` and must still find that VM, and the echo is escaped once."""
    from tests.helpers import job_run

    job_run(bot.em, now, [("R&D lab", "Failed", "disk <full>")], job="Lab <jobs>")
    bot.send('vm:"R&amp;D lab" job:"Lab &lt;jobs&gt;" since:1d')
    text = blocks_text(bot.answer())
    assert "*/veeam vm:R&amp;D lab job:Lab &lt;jobs&gt; since:1d*" in text
    assert "&amp;amp;" not in text and "&amp;lt;" not in text
    assert ":red_circle: *R&amp;D lab* · Lab &lt;jobs&gt;" in text
    (query,) = [q for q in bot.em.queries() if "R&D lab" in q.params.get("filter", "")]
    assert 'VmDisplayName=="R&D lab"' in query.params["filter"]


@pytest.mark.pool(1, 1)
def test_a_full_queue_answers_busy_in_the_ack(bot: Bot) -> None:
    """One worker and one waiting place: a third query while EM is slow is refused at once,
    in the ack, rather than waiting where its response_url could expire."""
    bot.em.delay = 2.0
    first = bot.send("failed", hook="h1")
    second = bot.send("warning", hook="h2")
    status, body, _took = bot.send("success", hook="h3")
    assert first[:2] == (200, "") and second[:2] == (200, "")
    assert status == 200 and not bot.slack.hooks  # refused while both still wait for EM
    assert "busy" in body and "try again in a minute" in body
    assert "match" in blocks_text(bot.answer("h1", timeout=30))
    assert "match" in blocks_text(bot.answer("h2", timeout=30))
    assert all(name != "h3" for name, _ in bot.slack.hooks)


def test_mute_by_command_holds_alerts_back_until_it_expires(bot: Bot, now: datetime) -> None:
    """Muted: recorded, not announced, and said in the alert channel; unmuted or expired:
    alerts resume."""
    from tests.helpers import job_run

    status, body, _ = bot.send("mute vm:APACHE02 for:4h patching <!channel> night", user="U0ALICE")
    assert status == 200 and body == ""
    answer = blocks_text(bot.answer())
    assert answer.startswith("Muted vm APACHE02 for 4 h (until ") and "(id " in answer
    mute_id = answer.split("(id ")[1].split(";")[0]
    (said,) = bot.slack.posted("C0ALERTS")
    assert said["text"].startswith("<@U0ALICE> muted vm APACHE02 for 4 h (until ")
    assert said["text"].endswith(": patching &lt;!channel&gt; night")
    _, listed, _ = bot.send("mutes", hook="h2")  # answered in the ack
    assert mute_id in listed and "<@U0ALICE>" in listed

    pipeline, em = pipeline_for(bot)  # what the emulator held before: announced as usual
    try:
        before = len(bot.slack.posted("C0ALERTS"))
        (muted,) = job_run(bot.em, now, [("apache02", "Failed", "x")], job="J1", ended_ago=0 * M)
        r = pipeline.poll_once(now + M)
        assert r.announced == 0 and len(bot.slack.posted("C0ALERTS")) == before
        assert bot.store.known([muted.uid])[0] == {muted.uid}  # recorded, never announced later
        from bot.digest.run import DigestRunner

        digest = DigestRunner(
            pipeline.settings, em, bot.store, pipeline.notifier, Renderer()
        ).build(now + 2 * M, timedelta(hours=24))
        assert "• vm *APACHE02* until <!date^" in "\n".join(_texts(digest.blocks))
        assert "by <@U0ALICE>: patching &lt;!channel&gt; night" in "\n".join(_texts(digest.blocks))
        job_run(bot.em, now, [("apache02", "Failed", "y")], job="J2", ended_ago=-5 * H)
        assert pipeline.poll_once(now + 5 * H + M).announced == 1  # the mute expired
        bot.send(f"unmute {mute_id}", hook="h3", user="U0BOB")
        assert blocks_text(bot.answer("h3")).startswith("Unmuted vm APACHE02")
        assert bot.slack.posted("C0ALERTS")[-1]["text"].startswith("<@U0BOB> unmuted vm APACHE02")
    finally:
        em.close()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("mute for:4h", "say what to mute"),
        ("mute vm:x", "say for how long"),
        ("mute vm:x for:soon", "for:soon is not a duration"),
        ("mute vm:x for:90d", "at most 30 days"),
        ("unmute", "say which mute"),
    ],
)
def test_a_bad_mute_is_answered_in_the_ack(bot: Bot, text: str, error: str) -> None:
    status, body, _ = bot.send(text)
    assert status == 200 and error in body and "usage: /veeam mute" in body
    assert bot.slack.posted("C0ALERTS") == []


def test_mute_from_a_disallowed_user_is_refused(bot: Bot) -> None:
    status, body, _ = bot.send("mute vm:x for:1h", channel="C0ELSEWHERE")
    assert status == 200 and "not enabled for you" in body
    assert bot.slack.posted("C0ALERTS") == [] and bot.store.all_records(MUTES) == {}


def pipeline_for(
    bot: Bot, *, rate: float = 0, actions: Any = None, types: Any = None, **alerts: Any
) -> tuple[Any, Any]:
    """The real pipeline on the slash bot's own state file and EM (one store per file),
    its Slack waits letting go of the store's lock as the bot's do; `rate` posts a second."""
    from bot.alerts.pipeline import Pipeline
    from bot.veeam.client import EMClient

    settings = Settings(
        veeam=veeam_settings(bot.em, **({"session_types": types} if types else {})),
        alerts=AlertSettings(channel="C0ALERTS", max_posts_per_second=rate, **alerts),
        jobs=JobsSettings(refresh=timedelta(0)),  # the generated jobs would be told stale
        state_path=str(bot.store.path),
        **({"actions": actions} if actions is not None else {}),
    )
    em = EMClient(settings.veeam)
    sleep = bot.store.lock.sleep
    notifier = SlackNotifier(
        web_client(TOKEN, bot.slack.url, sleep=sleep), Pacer(rate, 1, sleep=sleep)
    )
    pipeline = Pipeline(settings, em, bot.store, notifier, Renderer(), retries=0)

    def redraw() -> None:
        with bot.store.lock:  # as the bot's Services.redraw
            pipeline.life.flush_updates()

    bot.deps.redraw = redraw
    pipeline.poll_once(datetime.now(UTC))  # the emulator's history: out of the way
    return pipeline, em


def click(bot: Bot, message: dict[str, Any], action: str, *, user: str, hook: str) -> int:
    # the buttons come last, in the alert's attachment (after the Reason)
    blocks = [b for a in message.get("attachments", []) for b in a.get("blocks", [])]
    button = next(
        e for b in blocks if b["type"] == "actions" for e in b["elements"]
        if e["action_id"] == action
    )  # fmt: skip
    payload = {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": user, "username": user.lower()},
        "api_app_id": "A1",
        "channel": {"id": "C0ALERTS", "name": "veeam-alerts"},
        "container": {
            "type": "message_attachment",
            "message_ts": message["ts"],
            "attachment_id": 1,
            "channel_id": "C0ALERTS",
            "is_ephemeral": False,
        },
        "message": message,
        "response_url": bot.slack.hook_base + hook,
        "trigger_id": "1.2.3",
        "actions": [
            {
                "action_id": action,
                "block_id": "veeam_buttons",
                "type": "button",
                "value": button["value"],
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    req = signed_action(bot.url, SECRET, payload)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def test_acknowledge_updates_the_alert_once_and_reports_a_second_click(
    bot: Bot, now: datetime
) -> None:
    from tests.helpers import job_run

    pipeline, em = pipeline_for(bot)
    try:
        job_run(bot.em, now, [("sql01", "Failed", "x")], job="Ack Job", ended_ago=-M)
        pipeline.poll_once(now + 2 * M)
        # as Bob's Slack still shows it when he clicks, after Alice
        alert = json.loads(json.dumps(bot.slack.posted("C0ALERTS")[-1]))
        assert click(bot, alert, "veeam_ack", user="U0ALICE", hook="a1") == 200
        assert "Acknowledged" in bot.answer("a1")["text"]
        updated = bot.slack.posted("C0ALERTS")[-1]
        texts = "\n".join(_texts(updated["blocks"] + updated["attachments"]))
        assert ":eyes: acknowledged by <@U0ALICE> at <!date^" in texts
        last = updated["attachments"][0]["blocks"][-1]  # who acknowledged: the last line
        assert last["type"] == "context" and "acknowledged by" in _texts([last])[0]
        assert "Acknowledge" not in texts  # the button acted once
        assert len(bot.slack.updates) == 1
        click(bot, alert, "veeam_ack", user="U0BOB", hook="a2")
        assert bot.answer("a2")["text"].startswith("Already acknowledged by <@U0ALICE> at ")
        assert len(bot.slack.updates) == 1
        # The acknowledgement survives the alert's later redraws (a repeat here).
        job_run(bot.em, now, [("sql01", "Failed", "y")], job="Ack Job", ended_ago=-3 * M)
        pipeline.poll_once(now + 4 * M)
        redrawn = bot.slack.posted("C0ALERTS")[-1]
        assert ":eyes: acknowledged by <@U0ALICE>" in "\n".join(
            _texts(redrawn["blocks"] + redrawn["attachments"])
        )
    finally:
        em.close()


def test_the_mute_vm_button_holds_that_vms_alerts_back(bot: Bot, now: datetime) -> None:
    from tests.helpers import job_run

    pipeline, em = pipeline_for(bot)
    try:
        job_run(bot.em, now, [("web07", "Failed", "x")], job="Btn Job", ended_ago=-M)
        pipeline.poll_once(now + 2 * M)
        alert = bot.slack.posted("C0ALERTS")[-1]
        click(bot, alert, "veeam_mute_vm", user="U0ALICE", hook="m1")
        assert bot.answer("m1")["text"].startswith("Muted vm web07 on enterprise06")
        said = bot.slack.posted("C0ALERTS")[-1]["text"]
        assert said.startswith("<@U0ALICE> muted vm web07")
        click(bot, alert, "veeam_mute_vm", user="U0BOB", hook="m2")
        assert bot.answer("m2")["text"].startswith("Already muted: vm web07")
        posts = len(bot.slack.posted("C0ALERTS"))
        job_run(bot.em, now, [("web07", "Failed", "y")], job="Other Job", ended_ago=-3 * M)
        assert pipeline.poll_once(now + 4 * M).announced == 0
        assert len(bot.slack.posted("C0ALERTS")) == posts
    finally:
        em.close()


def test_buttons_from_a_disallowed_user_are_refused(bot: Bot, now: datetime) -> None:
    from tests.helpers import job_run

    bot.deps.settings = replace(
        bot.deps.settings, slash=SlashSettings(allowed_channels=(), allowed_users=("U0ALICE",))
    )
    pipeline, em = pipeline_for(bot)
    try:
        job_run(bot.em, now, [("web08", "Failed", "x")], job="Deny Job", ended_ago=-M)
        pipeline.poll_once(now + 2 * M)
        alert = bot.slack.posted("C0ALERTS")[-1]
        for action, hook in (("veeam_ack", "d1"), ("veeam_mute_job", "d2")):
            click(bot, alert, action, user="U0MALLORY", hook=hook)
            assert "not enabled for you" in bot.answer(hook)["text"]
        assert bot.slack.updates == [] and bot.store.all_records(MUTES) == {}
    finally:
        em.close()


def test_several_enterprise_managers_and_em_narrowing(bot: Bot, now: datetime) -> None:
    """With several Enterprise Managers a query asks all of them, each row names its server,
    `em:NAME` narrows it to one, and one that does not answer is named under the others'
    rows."""
    from tests.helpers import job_run

    other = Emulator(SessionStore([])).start()
    job_run(other, now, [("only-on-b", "Failed", "quota")])
    client = EMClient(veeam_settings(other, attempts=1))
    bot.deps.ems = {"em-a": bot.deps.em, "em-b": client}
    try:
        bot.send("failed since:14d limit:100", hook="all")
        text = blocks_text(bot.answer("all"))
        assert "*only-on-b* · Replication Job 2" in text and "· em-b" in text
        assert "· em-a" in text

        bot.send("failed em:EM-B since:14d", hook="b")
        text = blocks_text(bot.answer("b"))
        assert "only-on-b" in text and "· em-a" not in text and "1 match" in text

        bot.send("failed em:nope", hook="nope")
        text = blocks_text(bot.answer("nope"))
        assert "em:nope is not an Enterprise Manager the bot watches; known: em-a, em-b" in text

        other.stop()
        bot.send("failed since:14d", hook="down")
        text = blocks_text(bot.answer("down"))
        assert "· em-a" in text and "only-on-b" not in text
        assert "Enterprise Manager em-b did not answer: cannot reach EM" in text
    finally:
        client.close()
        other.stop()


def test_an_acknowledge_during_a_redraw_is_never_undone(bot: Bot, now: datetime) -> None:
    """The poll is redrawing the alert (a repeat) and Slack answers its chat.update with a
    429: while it waits, Alice clicks Acknowledge. The redraw that read the alert before the
    click lands after it, and the alert still ends up showing the acknowledgement."""
    import threading

    from tests.helpers import job_run

    pipeline, em = pipeline_for(bot)
    try:
        job_run(bot.em, now, [("sql01", "Failed", "x")], job="Race Job", ended_ago=-M)
        pipeline.poll_once(now + 2 * M)
        alert = json.loads(json.dumps(bot.slack.posted("C0ALERTS")[-1]))
        job_run(bot.em, now, [("sql01", "Failed", "y")], job="Race Job", ended_ago=-3 * M)
        bot.slack.fail_updates = [429]  # Retry-After: 1 s
        poll = threading.Thread(target=pipeline.poll_once, args=(now + 4 * M,))
        poll.start()
        deadline = time.monotonic() + 20
        while not bot.slack.method_calls("chat.update") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bot.slack.method_calls("chat.update"), "the poll never redrew the alert"
        click(bot, alert, "veeam_ack", user="U0ALICE", hook="r1")
        answer = bot.answer("r1")["text"]
        still_redrawing = poll.is_alive()
        poll.join(30)
        assert answer.startswith("Acknowledged") and still_redrawing
        final = bot.slack.posted("C0ALERTS")[-1]
        shown = "\n".join(_texts(final["blocks"] + final["attachments"]))
        assert ":eyes: acknowledged by <@U0ALICE>" in shown
        assert "failed again once" in "\n".join(
            _texts(bot.slack.posted("C0ALERTS")[-1]["attachments"])
        )
    finally:
        em.close()


def test_a_button_answers_while_a_long_delivery_is_under_way(bot: Bot, now: datetime) -> None:
    """80 alerts at 20 posts a second: a Mute click on the first one is answered (and
    said in the channel) between two posts, not after the last one."""
    import threading

    from tests.helpers import job_run

    pipeline, em = pipeline_for(bot, rate=20, max_messages_per_poll=0)
    try:
        before = len(bot.slack.announced_uids("C0ALERTS"))  # the emulator's own history
        for i in range(80):
            job_run(bot.em, now, [(f"vm{i:02}", "Failed", "x")], job=f"Job {i:02}", ended_ago=-M)
        poll = threading.Thread(target=pipeline.poll_once, args=(now + 2 * M,))
        poll.start()
        deadline = time.monotonic() + 30
        while len(bot.slack.posted("C0ALERTS")) < before + 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        first = bot.slack.posted("C0ALERTS")[before]
        click(bot, first, "veeam_mute_vm", user="U0ALICE", hook="c1")
        answer = bot.answer("c1")["text"]
        posted_by_then = len(bot.slack.announced_uids("C0ALERTS")) - before
        poll.join(60)
        assert answer.startswith("Muted vm vm"), answer
        assert posted_by_then < 80, "the click waited for the whole delivery"
        assert len(bot.slack.announced_uids("C0ALERTS")) - before == 80
    finally:
        em.close()


def test_stopping_the_http_surface_right_after_it_starts_is_clean(
    tmp_path: Path, slack: FakeSlack
) -> None:
    """A SIGTERM just after `run` starts stops the HTTP server while its loop thread is
    only starting: no thread may die with a traceback (EBADF on closed sockets), and the
    port is free again."""
    import threading

    settings = Settings(
        slack=SlackSettings(
            bot_token=Secret(TOKEN), signing_secret=Secret(SECRET), api_url=slack.url
        ),
        state_path=str(tmp_path / "state.sqlite"),
        port=0,
    )
    app = bolt_app(settings, web_client(TOKEN, slack.url))
    died: list[str] = []
    before = threading.excepthook
    threading.excepthook = lambda args: died.append(f"{args.thread}: {args.exc_value!r}")
    try:
        for _ in range(30):
            surface = Surface(settings, app, host="127.0.0.1")
            surface.start()
            surface.stop()
            assert not surface._http_thread or not surface._http_thread.is_alive()
    finally:
        threading.excepthook = before
    assert died == []


def test_routes_shows_the_table_and_where_an_alert_would_go(bot: Bot) -> None:
    bot.deps.settings = replace(
        bot.deps.settings,
        alerts=replace(bot.deps.settings.alerts, routes=(
            Route("#dba", jobs=("SQL*",)), Route("#noc <all>", cont=True),
        )),
    )  # fmt: skip
    status, body, _ = bot.send('routes job:"SQL Nightly" vm:sql01')  # answered in the ack
    assert status == 200
    text = json.loads(body)["blocks"][0]["text"]["text"]
    assert "1. #dba ← jobs SQL*" in text and "2. #noc &lt;all&gt; ← everything · continue" in text
    assert "then: C0ALERTS ← what no route takes" in text
    assert "*job:SQL Nightly vm:sql01 type:backup result:Failed* would go to #dba" in text
    _, body, _ = bot.send("routes job:Files")
    assert "would go to #noc &lt;all&gt;, C0ALERTS (its problem's thread in #noc" in body
    _, body, _ = bot.send("routes color:blue")
    assert "usage: /veeam routes" in body
    assert bot.em.queries() == []


def test_mutes_lists_the_windows_and_the_one_in_force(bot: Bot) -> None:
    now = datetime.now(UTC)
    start = (now - 10 * M).time().replace(second=0, microsecond=0)
    end = (now + 50 * M).time().replace(second=0, microsecond=0)
    windows = (
        Window("patching <now>", tuple(range(7)), start, end, "UTC"),
        Window("weekend", (5, 6), clock(22, 0), clock(6, 0), "Europe/Berlin", jobs=("SQL*",)),
    )
    bot.deps.settings = replace(bot.deps.settings, mutes=MuteSettings(windows=windows))
    _, body, _ = bot.send("mutes")
    text = json.loads(body)["blocks"][0]["text"]["text"]
    assert "No mutes are active." in text
    assert "• window patching &lt;now&gt;:" in text and "*in force* until <!date^" in text
    assert "• window weekend: 22:00–06:00 Europe/Berlin on sat, sun; jobs SQL*, servers all" in text


def wait_view(bot: Bot, user: str, since: int = 0, timeout: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = bot.slack.method_calls("views.publish")
        if len(calls) > since and user in bot.slack.views:
            return bot.slack.views[user]
        time.sleep(0.01)
    raise AssertionError("no Home tab published")


def test_the_home_tab_is_built_from_the_state_alone_even_with_a_slow_em(
    bot: Bot, now: datetime
) -> None:
    from tests.helpers import job_run

    pipeline, em = pipeline_for(bot)
    try:
        job_run(bot.em, now, [("sql01", "Failed", "disk <full>")], job="Home <Job>", ended_ago=-M)
        pipeline.poll_once(now + 2 * M)
        alert = bot.slack.posted("C0ALERTS")[-1]
        from bot.alerts.mutes import MuteBook, parse_mute

        MuteBook(bot.store).add(parse_mute(["vm:web09", "for:4h", "patching"], "U0ALICE", now))
        bot.em.delay = 5.0  # EM answers in 5 s: the Home tab never waits for it
        asked = len(bot.em.queries())
        started = time.monotonic()
        with urllib.request.urlopen(
            signed_event(bot.url, SECRET, {"type": "app_home_opened", "user": "U0BOB",
                                           "channel": "D1", "tab": "home", "event_ts": "1.1"}),
            timeout=10,
        ) as resp:  # fmt: skip
            assert resp.status == 200
        view = wait_view(bot, "U0BOB")
        assert time.monotonic() - started < 1.5
        assert len(bot.em.queries()) == asked
        text = "\n".join(_texts(view["blocks"]))
        opened = len(
            [p for p in bot.store.all_records("problems").values() if p["state"] == "open"]
        )
        assert f"*Open problems: {opened}* (longest open first)" in text
        link = f"https://example.slack.com/archives/C0ALERTS/p{alert['ts'].replace('.', '')}"
        assert "*sql01* (Home &lt;Job&gt;) · Failed · open" in text and f"<{link}|alert>" in text
        assert "*Active mutes: 1*" in text and "vm web09" in text
        assert "Next digest <!date^" in text
        mute_id = next(
            b["accessory"]["value"] for b in view["blocks"]
            if b.get("accessory", {}).get("action_id") == "veeam_unmute"
        )  # fmt: skip
        payload = {
            "type": "block_actions", "team": {"id": "T1"}, "user": {"id": "U0BOB"},
            "api_app_id": "A1", "container": {"type": "view", "view_id": "V1"},
            "trigger_id": "1.2.3", "view": {"id": "V1", "type": "home"},
            "actions": [{"action_id": "veeam_unmute", "block_id": "b", "type": "button",
                         "value": mute_id, "action_ts": "1.2"}],
        }  # fmt: skip
        published = len(bot.slack.method_calls("views.publish"))
        with urllib.request.urlopen(signed_action(bot.url, SECRET, payload), timeout=10) as resp:
            assert resp.status == 200
        view = wait_view(bot, "U0BOB", since=published)
        assert "*Active mutes: 0*" in "\n".join(_texts(view["blocks"]))
        said = bot.slack.posted("C0ALERTS")[-1]["text"]
        assert said.startswith("<@U0BOB> unmuted vm web09")
    finally:
        em.close()


RETRIES = ActionSettings(retry=True, allowed_users=("U0ALICE",))


def retry_bot(bot: Bot, now: datetime, job: str, result: str) -> tuple[Any, Any, dict[str, Any]]:
    """The slash bot with retries on, an alert for `job` (its last run `result`) posted."""
    bot.deps.settings = replace(bot.deps.settings, actions=RETRIES)
    bot.deps.retries.sleep = lambda _s: time.sleep(0.05)
    pipeline, em = pipeline_for(bot, actions=RETRIES)
    job_run(bot.em, now, [("sql01", "Failed", "x")], job=job, ended_ago=-M)
    pipeline.poll_once(now + 2 * M)
    alert = bot.slack.posted("C0ALERTS")[-1]
    if result != "Failed":  # a later run of the job succeeded: EM will refuse the retry
        job_run(bot.em, now, [("sql01", result, "")], job=job, ended_ago=-2 * M)
    return pipeline, em, alert


def thread_text(bot: Bot, alert: dict[str, Any], timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = bot.slack.thread(alert["ts"])
        if replies:
            return str(replies[-1]["text"])
        time.sleep(0.02)
    raise AssertionError("nothing said in the alert's thread")


def retry_posts(bot: Bot) -> list[Any]:
    return [r for r in bot.em.requests if r.method == "POST" and "action" in r.params]


def test_a_retry_by_an_allowed_user_is_said_in_the_alerts_thread(bot: Bot, now: datetime) -> None:
    from tests.helpers import job_run  # noqa: F401 - retry_bot's

    _pipeline, em, alert = retry_bot(bot, now, "Retry Job", "Failed")
    try:
        buttons = [e for b in alert["attachments"][0]["blocks"] if b["type"] == "actions"
                   for e in b["elements"]]  # fmt: skip
        retry = next(e for e in buttons if e["action_id"] == "veeam_retry")
        assert "retry *Retry Job* on *enterprise06.tech.local*" in retry["confirm"]["text"]["text"]
        assert click(bot, alert, "veeam_retry", user="U0ALICE", hook="r1") == 200
        assert "Asking Enterprise Manager to retry Retry Job" in bot.answer("r1")["text"]
        said = thread_text(bot, alert)
        assert said.startswith(":repeat: <@U0ALICE> asked Enterprise Manager to retry *Retry Job*")
        assert 'EM: “Job "Retry Job" triggered to retry.”' in said
        assert len(retry_posts(bot)) == 1
    finally:
        em.close()


def test_a_retry_by_anyone_else_is_refused_with_who_may(bot: Bot, now: datetime) -> None:
    _pipeline, em, alert = retry_bot(bot, now, "Retry Job", "Failed")
    try:
        click(bot, alert, "veeam_retry", user="U0BOB", hook="r2")
        assert bot.answer("r2")["text"] == (
            "Only <@U0ALICE> may retry jobs ([actions] allowed_users)."
        )
        assert retry_posts(bot) == [] and bot.slack.thread(alert["ts"]) == []
    finally:
        em.close()


def test_em_refusing_the_retry_is_quoted(bot: Bot, now: datetime) -> None:
    _pipeline, em, alert = retry_bot(bot, now, "Fine Job", "Success")
    try:
        click(bot, alert, "veeam_retry", user="U0ALICE", hook="r3")
        said = thread_text(bot, alert)
        assert (
            'EM refused: “Job "Fine Job" cannot be retried: its last session did not fail.”' in said
        )
    finally:
        em.close()


def test_a_double_click_sends_one_request_and_says_so(bot: Bot, now: datetime) -> None:
    _pipeline, em, alert = retry_bot(bot, now, "Retry Job", "Failed")
    bot.em.task_polls = 40  # the task runs for about 2 s
    try:
        click(bot, alert, "veeam_retry", user="U0ALICE", hook="d1")
        bot.answer("d1")
        click(bot, alert, "veeam_retry", user="U0ALICE", hook="d2")
        second = bot.answer("d2")["text"]
        assert second.startswith("A retry of Retry Job is already running, asked by <@U0ALICE>")
        thread_text(bot, alert)
        assert len(retry_posts(bot)) == 1
    finally:
        em.close()


def test_retry_by_command(bot: Bot, now: datetime) -> None:
    _pipeline, em, _alert = retry_bot(bot, now, "Retry Job", "Failed")
    try:
        bot.send('retry job:"Retry Job"', user="U0ALICE", hook="c1")
        text = bot.answer("c1")["text"]
        assert "asked Enterprise Manager to retry *Retry Job*" in text
        assert "triggered to retry" in text
        _, body, _ = bot.send("retry job:x", user="U0BOB")
        assert "Only <@U0ALICE> may retry jobs" in body
        _, body, _ = bot.send("retry sql01", user="U0ALICE")
        assert "usage: /veeam retry job:NAME [em:NAME]" in body
    finally:
        em.close()


def test_a_mute_is_said_in_the_channels_of_the_routes_it_concerns(bot: Bot) -> None:
    routes = (Route("C0OPS", jobs=("SQL*",)), Route("C0DIGEST", vms=("web*",)))
    bot.deps.settings = replace(
        bot.deps.settings, alerts=replace(bot.deps.settings.alerts, routes=routes)
    )
    bot.send('mute job:"SQL Nightly" for:2h patching', user="U0ALICE")
    bot.answer()
    (said,) = bot.slack.posted("C0OPS")  # the SQL route's channel
    assert said["text"].startswith("<@U0ALICE> muted job SQL Nightly for 2 h")
    assert len(bot.slack.posted("C0ALERTS")) == 1  # and the alert channel, as always
    assert bot.slack.posted("C0DIGEST") == []  # a VM route: not concerned


def test_an_agent_job_is_retried_by_its_own_endpoint(bot: Bot, now: datetime) -> None:
    bot.deps.settings = replace(bot.deps.settings, actions=RETRIES)
    bot.deps.retries.sleep = lambda _s: time.sleep(0.05)
    laptops = job_only(now, job="Laptops", job_type="AgentBackup", failure="No agent answered",
                       job_uid="urn:veeam:Job:0badc0de-0000-4000-8000-0000000a6e17",
                       created=now - M, ended=now + M)  # fmt: skip
    bot.em.jobs.add([laptops])
    pipeline, em = pipeline_for(bot, actions=RETRIES, types=("BackupTaskSession",))
    try:
        pipeline.poll_once(now + 2 * M)
        (alert,) = [m for m in bot.slack.posted("C0ALERTS") if "Laptops" in str(m["blocks"])]
        click(bot, alert, "veeam_retry", user="U0ALICE", hook="ag1")
        said = thread_text(bot, alert)
        assert 'EM: “Job "Laptops" triggered to retry.”' in said
        (post,) = retry_posts(bot)
        assert post.path == "/api/agents/jobs/0badc0de-0000-4000-8000-0000000a6e17"
    finally:
        em.close()
