"""Property: any string used as a `vm:` value reaches EM as exactly that literal and matches
only sessions with exactly that name (client builder vs the emulator's own parser)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.emulator.data import SessionStore, generate
from bot.emulator.filterlang import Comparison, Group, parse_filter
from bot.emulator.server import Emulator
from bot.slash.lookup import run_query
from bot.slash.query import parse_query
from bot.veeam.client import EMClient
from tests.conftest import veeam_settings

NOW = datetime.now(UTC)
SERIAL = itertools.count()  # UIDs stay unique when Hypothesis replays a value
# XML 1.0 cannot carry most control characters, so neither can a real EM name.
names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    min_size=1,
    max_size=40,
)


@pytest.fixture(scope="module")
def prop_env() -> Iterator[tuple[Emulator, EMClient]]:
    emu = Emulator(SessionStore(generate(50, now=NOW, seed=3))).start()
    client = EMClient(veeam_settings(emu, format="json"))
    yield emu, client
    client.close()
    emu.stop()


def as_word(value: str) -> str:
    return 'vm:"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=names)
def test_vm_value_reaches_em_as_exact_literal(
    prop_env: tuple[Emulator, EMClient], name: str
) -> None:
    emu, client = prop_env
    # Hypothesis prints the emulator (every dataclass field, the request log too) before each
    # example; keep that log to this example so the printout stays small.
    emu.requests.clear()
    template = next(s for s in emu.store.all() if s.ended is not None)
    variants = {
        name,
        name + "x",
        "x" + name,
        name.upper(),
        name.lower(),
        name.strip() or "_",
        name.replace('"', ""),
        name.replace(" ", ""),
    }
    mine = [
        replace(
            template,
            uid=f"urn:veeam:ReplicaTaskSession:p-{next(SERIAL)}",
            vm=v,
            type="ReplicaTaskSession",
            created=NOW,
            ended=NOW,
        )
        for v in sorted(variants)
    ]
    emu.store.add(mine)
    query = parse_query(as_word(name) + " since:1h", now=NOW)
    answer = run_query(client, query)
    sent = emu.queries()[-2 if answer.total > 20 else -1].params["filter"]
    node = parse_filter(sent)
    assert isinstance(node, Group)
    vm_terms = [t for t in node.parts if isinstance(t, Comparison) and t.field == "vmdisplayname"]
    assert [t.value for t in vm_terms] == [name]
    assert answer.sessions and {s.vm for s in answer.sessions} == {name}
    expected = [
        s
        for s in emu.store.all()
        if s.vm == name and s.type == "ReplicaTaskSession" and s.created >= query.since
    ]
    assert len(expected) == answer.total
