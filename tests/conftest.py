"""Shared fixtures: a real EM emulator on loopback and real clients pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config.settings import Secret, VeeamSettings
from bot.emulator.data import SessionStore, generate
from bot.emulator.server import Emulator
from bot.veeam.client import EMClient
from tests.fake_slack import FakeSlack

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Real EM v12/v13 answers (anonymised, MIT, see fixtures/captures/LICENSE).
CAPTURES = FIXTURES / "captures"
# The XML example of EM's "GET /query?type=ReplicaTaskSession" documentation page, verbatim.
SEED_XML = FIXTURES / "seed_replica_task_sessions.xml"


@pytest.fixture(scope="session")
def now() -> datetime:
    """The one clock reading the tests hand to the code under test."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def emulator(now: datetime) -> Iterator[Emulator]:
    emu = Emulator(SessionStore(generate(600, now=now, seed=7))).start()
    yield emu
    emu.stop()


def veeam_settings(emu: Emulator, **kw: object) -> VeeamSettings:
    base: dict[str, object] = {
        "url": emu.url,
        "username": "demo",
        "password": Secret("demo"),
        "page_size": 100,
        "backoff": timedelta(milliseconds=5),
    }
    base.update(kw)
    return VeeamSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def client(emulator: Emulator) -> Iterator[EMClient]:
    c = EMClient(veeam_settings(emulator))
    yield c
    c.close()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    """A fake Slack Web API (and response_url sink) on loopback."""
    fake = FakeSlack().start()
    yield fake
    fake.stop()


@pytest.fixture
def em() -> Iterator[Emulator]:
    """An emulator with no sessions: a test adds the job runs it needs (tests.helpers.job_run)."""
    emu = Emulator(SessionStore([])).start()
    yield emu
    emu.stop()


@pytest.fixture
def rig(em: Emulator, slack: FakeSlack, tmp_path: Path, now: datetime) -> Iterator[Any]:
    """The real pipeline against `em` and the fake Slack, with its state in `tmp_path`."""
    from tests.helpers import Rig, settings_for  # helpers import this module

    r = Rig(settings_for(em, slack, tmp_path), now)
    yield r
    r.close()
