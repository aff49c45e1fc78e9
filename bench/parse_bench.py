"""Parse throughput: our parse_page vs a bare lxml / json parse of the same 500-session pages.

PYTHONPATH=. .venv/bin/python bench/parse_bench.py [ROUNDS]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from lxml import etree

from bot.emulator import wire
from bot.emulator.data import generate
from bot.veeam.parse import parse_page

N = 500


def pages() -> tuple[bytes, bytes]:
    sessions = generate(N, now=datetime.now(UTC), seed=1, extras=False)[:N]
    paging = {"num": 1, "size": N, "count": 1, "links": []}
    base = "https://em.corp.local:9398"
    xml = wire.xml_query(sessions, "ReplicaTaskSession", base, paging).encode()
    js = wire.dump_json(
        wire.json_query(sessions, "ReplicaTaskSession", base, paging), camel_case=False
    ).encode()
    return xml, js


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def paired(ours: Callable[[], object], bare: Callable[[], object], rounds: int) -> dict[str, float]:
    """Time ours and the bare parse back to back, alternating which goes first, so both see
    the same machine state (this VM's timings drift by 2x between seconds). Reports the
    best time of each, and the median of the per-round ratios."""
    ours(), bare()
    t_ours: list[float] = []
    t_bare: list[float] = []
    for i in range(rounds):
        if i % 2:
            t_bare.append(timed(bare))
            t_ours.append(timed(ours))
        else:
            t_ours.append(timed(ours))
            t_bare.append(timed(bare))
    return {
        "ours": N / min(t_ours),
        "bare": N / min(t_bare),
        "ratio_best": min(t_ours) / min(t_bare),
        "ratio_median": statistics.median(o / b for o, b in zip(t_ours, t_bare, strict=True)),
    }


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    xml, js = pages()
    bare_parser = etree.XMLParser(resolve_entities=False, no_network=True)
    assert xml.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<QueryResult xmlns:xsi=')
    print(f"page of {N} sessions: XML {len(xml) / 1024:.0f} KiB, JSON {len(js) / 1024:.0f} KiB")
    print("XML root as EM 13.1 writes it: xmlns:xsi, xmlns:xsd, then the default xmlns")
    for kind, bare_name, target, ours, bare in (
        (
            "xml",
            "bare lxml",
            "about 2x",
            lambda: parse_page(xml),
            lambda: etree.fromstring(xml, bare_parser),
        ),
        ("json", "bare json.loads", "1.5x", lambda: parse_page(js), lambda: json.loads(js)),
    ):
        r = paired(ours, bare, rounds)
        print(
            f"{kind:4s}: ours {r['ours']:9,.0f} sessions/s, {bare_name} {r['bare']:9,.0f}/s; "
            f"ours takes {r['ratio_median']:.2f}x the bare parse (median of {rounds} paired "
            f"rounds; best vs best {r['ratio_best']:.2f}x; target {target})"
        )


if __name__ == "__main__":
    main()
