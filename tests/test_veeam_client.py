"""The EM client against the emulator over loopback: logon, paging, errors, TLS."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from bot.config.settings import Secret
from bot.emulator.data import EmSession, SessionStore, generate
from bot.emulator.server import Emulator
from bot.errors import AuthError, EMRejected, SourceError
from bot.veeam.auth import logout_path
from bot.veeam.client import EMClient
from tests.conftest import veeam_settings


def test_paging_walks_every_page_in_order(emulator: Emulator) -> None:
    with EMClient(veeam_settings(emulator, page_size=7)) as c:
        got = list(c.query("ReplicaTaskSession", "", sort_asc="CreationTime"))
    expected = sorted(
        (s for s in emulator.store.all() if s.type == "ReplicaTaskSession"), key=lambda s: s.created
    )
    assert [s.uid for s in got] == [s.uid for s in expected]
    pages = [int(q.params["page"]) for q in emulator.queries()]
    assert pages == list(range(1, -(-len(expected) // 7) + 1))
    assert len(pages) > 5
    assert all(q.params["pageSize"] == "7" for q in emulator.queries())


def test_generator_reads_at_most_one_page_ahead(emulator: Emulator) -> None:
    with EMClient(veeam_settings(emulator, page_size=5)) as c:
        it = c.query("ReplicaTaskSession", "")
        first = [next(it) for _ in range(5)]
        it.close()  # a caller that stops early: page 2 may have been asked for, no more
        assert len(first) == 5
        assert [q.params["page"] for q in emulator.queries()] in (["1"], ["1", "2"])
        assert len(emulator.store.all()) > 15  # there were more pages to read


def test_a_failing_later_page_ends_the_walk_with_a_clear_error(emulator: Emulator) -> None:
    """Pages after the first are read ahead; a failure there still surfaces in order."""
    emulator.fail_queries.extend([0, 0, 503, 503, 503])  # page 3 fails all three attempts
    with EMClient(veeam_settings(emulator, page_size=5)) as c:
        it = c.query("ReplicaTaskSession", "", sort_asc="CreationTime")
        got = [next(it) for _ in range(10)]
        with pytest.raises(SourceError, match="503"):
            next(it)
    assert len({s.uid for s in got}) == 10
    assert [q.params["page"] for q in emulator.queries()] == ["1", "2", "3", "3", "3"]


ORDER = {"Success": 0, "Warning": 1, "Failed": 2}
STATES = {"InProgress": 0, "Pending": 1, "Completed": 2}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ('Result>="Warning"', lambda s: ORDER.get(s.result, -1) >= 1),
        ("Result!=Success", lambda s: s.result in ("Warning", "Failed")),
        ("Result<Failed", lambda s: s.result in ("Success", "Warning")),
        ("State<Completed", lambda s: s.state in ("InProgress", "Pending")),
        (
            '(Result=="Failed",Result=="Warning");State=="Completed"',
            lambda s: s.result in ("Failed", "Warning") and s.state == "Completed",
        ),
        (
            "(Result==Failed,State==Pending)",
            lambda s: s.result == "Failed" or s.state == "Pending",
        ),
        (
            "(Result==Warning,State==Pending,VmDisplayName==apache02)",
            lambda s: s.result == "Warning" or s.state == "Pending" or s.vm == "apache02",
        ),
        ("Result==Failed;TotalSize==0;State==Completed", lambda s: s.result == "Failed"),
        (
            "State!=Completed;Result==Success;TotalSize==0;VmDisplayName!=erp01",
            lambda s: s.state != "Completed" and s.vm != "erp01",
        ),
    ],
)
def test_emulator_evaluates_filters_as_em_does(
    client: EMClient, emulator: Emulator, flt: str, expected: Callable[[EmSession], bool]
) -> None:
    """Enums compare by ordinal, `;` binds tighter than `,`; checked against plain Python."""
    got = {s.uid for s in client.query("ReplicaTaskSession", flt)}
    want = {s.uid for s in emulator.store.all() if s.type == "ReplicaTaskSession" and expected(s)}
    assert got == want and want


def test_expired_token_leads_to_a_silent_relogon(client: EMClient, emulator: Emulator) -> None:
    before = list(client.query("ReplicaTaskSession", 'VmDisplayName=="apache02"'))
    emulator.expire_tokens()
    again = list(client.query("ReplicaTaskSession", 'VmDisplayName=="apache02"'))
    assert again == before and {s.vm for s in again} == {"apache02"}
    assert client.auth.logons == 2
    logons = [r for r in emulator.requests if r.method == "POST"]
    assert len(logons) == 2


def test_token_is_sent_and_read_case_insensitively(client: EMClient, emulator: Emulator) -> None:
    list(client.query("ReplicaTaskSession", 'VmDisplayName=="apache02"'))
    query = emulator.queries()[-1]
    assert query.headers["x-restsvcsessionid"] == client.auth.token
    assert query.headers["accept"] == "application/xml"


def test_bad_password_gives_a_clear_error(emulator: Emulator) -> None:
    settings = veeam_settings(emulator, password=Secret("hunter2-not-it"))
    with EMClient(settings) as c, pytest.raises(AuthError) as err:
        list(c.query("ReplicaTaskSession", ""))
    assert "EM refused the logon of 'demo'" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_unknown_field_gives_ems_message(client: EMClient) -> None:
    with pytest.raises(EMRejected) as err:
        list(client.query("ReplicaTaskSession", 'Foo=="bar"'))
    assert str(err.value) == "EM rejected the query: Unknown field [Foo] (HTTP 400)"


def test_malformed_filter_is_rejected_by_em(client: EMClient) -> None:
    with pytest.raises(EMRejected, match="Invalid filter expression"):
        list(client.query("ReplicaTaskSession", 'VmDisplayName=="unterminated'))


def test_server_errors_become_source_errors(client: EMClient, emulator: Emulator) -> None:
    emulator.fail_queries += [503, 503, 503]
    with pytest.raises(SourceError, match=r"\(HTTP 503\)"):
        list(client.query("ReplicaTaskSession", ""))
    assert len(emulator.queries()) == 3  # three attempts, then the error


def test_a_passing_em_hiccup_is_retried_within_the_request(
    client: EMClient, emulator: Emulator
) -> None:
    """One 500 (or two) on a query page, or on the logon, costs a retry, not the poll."""
    expected = [s.uid for s in client.query("ReplicaTaskSession", "")]
    emulator.fail_queries = [500, 502]
    got = [s.uid for s in client.query("ReplicaTaskSession", "")]
    assert got == expected
    assert client.retries == 2


def test_a_failing_logon_is_retried(emulator: Emulator) -> None:
    emulator.fault_rate = 1.0
    with EMClient(veeam_settings(emulator)) as c:
        with pytest.raises(SourceError, match=r"EM logon failed with HTTP 500"):
            c.ping()
        assert sum(r.method == "POST" for r in emulator.requests) == 3
        assert c.retries == 2
        emulator.fault_rate = 0.0
        c.ping()


def test_client_errors_are_not_retried(client: EMClient, emulator: Emulator) -> None:
    with pytest.raises(EMRejected, match=r"HTTP 400"):
        list(client.query("ReplicaTaskSession", 'VmDisplayName=="unterminated'))
    assert len(emulator.queries()) == 1
    assert client.retries == 0


def test_attempts_and_backoff_come_from_settings(emulator: Emulator) -> None:
    emulator.fail_queries = [500] * 5
    settings = veeam_settings(emulator, attempts=1)
    with EMClient(settings) as c, pytest.raises(SourceError, match=r"HTTP 500"):
        c.ping()
    assert len(emulator.queries()) == 1


@pytest.mark.parametrize(
    ("fmt", "camel", "location"),
    [("xml", False, False), ("json", False, False), ("json", True, False), ("xml", False, True)],
)
def test_logout_on_close_ends_the_em_session(
    emulator: Emulator, fmt: str, camel: bool, location: bool
) -> None:
    """EM documents its logon answer as a LogonSession body (SessionId and a Delete link)
    with no Location header; the bot logs out through the body, in XML, v12 and v13 JSON."""
    emulator.camel_case, emulator.location_header = camel, location
    c = EMClient(veeam_settings(emulator, format=fmt))
    list(c.query("ReplicaTaskSession", 'VmDisplayName=="apache02"'))
    logon = next(r for r in emulator.requests if r.method == "POST")
    assert len(emulator.tokens) == 1
    session_id = next(iter(emulator.tokens.values()))[0]
    c.close()
    assert emulator.tokens == {}
    last = emulator.requests[-1]
    assert (last.method, last.path) == ("DELETE", f"/api/logonSessions/{session_id}")
    assert logon.path == "/api/sessionMngr/"


XML_LOGON = (
    b'<LogonSession xmlns="http://www.veeam.com/ent/v1.0" Type="LogonSession">'
    b'<Links><Link Rel="Up" Href="https://em.example:9398/api/" />'
    b'<Link Rel="Delete" Href="https://srv12.tech.local:9398/api/logonSessions/abc-1" /></Links>'
    b"<UserName>SRV12\\Administrator</UserName><SessionId>abc-1</SessionId></LogonSession>"
)


@pytest.mark.parametrize(
    ("body", "location", "expected"),
    [
        # EM's host name in the link is not used: the bot talks to the URL it was given.
        (XML_LOGON, "", "/api/logonSessions/abc-1"),
        (
            b'{"sessionId": "s-2", "links": [{"rel": "Up", "href": "x"}]}',
            "",
            "/api/logonSessions/s-2",
        ),
        (
            b'\xef\xbb\xbf{"SessionId": "s-3", "Links": [{"Rel": "Delete", '
            b'"Href": "https://em:9398/api/logonSessions/s-3", "Name": null}]}',
            "",
            "/api/logonSessions/s-3",
        ),
        (b"", "https://em:9398/api/logonSessions/s-4", "/api/logonSessions/s-4"),
        (b"<LogonSession><broken", "", None),
        (b"", "", None),
    ],
)
def test_logout_path_prefers_the_body(body: bytes, location: str, expected: str | None) -> None:
    assert logout_path(body, location) == expected


def test_em_down_gives_one_sentence() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    emu_url = f"http://127.0.0.1:{port}"
    from bot.config.settings import VeeamSettings

    settings = VeeamSettings(
        url=emu_url, username="u", password=Secret("p"), backoff=timedelta(milliseconds=5)
    )
    with EMClient(settings) as c, pytest.raises(SourceError) as err:
        list(c.query("ReplicaTaskSession", ""))
    assert str(err.value).startswith(f"cannot reach EM at {emu_url}")
    assert c.retries == 2  # a refused connection is tried three times


def test_slow_em_times_out_clearly(emulator: Emulator) -> None:
    emulator.delay = 1.5
    settings = veeam_settings(emulator, timeout=timedelta(seconds=0.5))
    with EMClient(settings) as c, pytest.raises(SourceError, match=r"did not answer within 0\.5s"):
        list(c.query("ReplicaTaskSession", ""))
    emulator.delay = 0


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


def test_tls_is_verified_by_default_and_a_ca_bundle_is_accepted(
    cert: tuple[Path, Path], now: object
) -> None:
    crt, key = cert
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    from datetime import UTC, datetime

    emu = Emulator(SessionStore(generate(20, now=datetime.now(UTC))), tls=ctx).start()
    try:
        assert emu.url.startswith("https://")
        with EMClient(veeam_settings(emu)) as c, pytest.raises(SourceError) as err:
            list(c.query("ReplicaTaskSession", ""))
        assert "VEEAM_VERIFY_TLS" in str(err.value) and "not trusted" in str(err.value)
        with EMClient(veeam_settings(emu, verify_tls=str(crt))) as c:
            assert list(c.query("ReplicaTaskSession", ""))
    finally:
        emu.stop()


def test_reprs_hide_secrets(client: EMClient) -> None:
    assert "demo" not in repr(client.settings.password)
    assert "<SECRET>" in repr(client.settings)
    assert "password=<SECRET>" in repr(client.auth)


def test_turning_tls_verification_off_is_warned_about(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    with EMClient(veeam_settings(emulator)) as c:
        c.ping()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    with EMClient(veeam_settings(emulator, verify_tls=False)) as c:
        c.ping()
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "TLS verification of Enterprise Manager" in warning.getMessage()
    assert "VEEAM_VERIFY_TLS to the path of the CA bundle" in warning.getMessage()
