"""Parse throughput: our parse_page vs a bare lxml / json parse of the same 500-session pages.

.venv/bin/python bench/parse_bench.py
"""

from __future__ import annotations

import json
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


def rate(fn: Callable[[], object], seconds: float = 2.0) -> float:
    """Sessions per second, best of several timed batches."""
    fn()
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(5):
            fn()
        best = min(best, (time.perf_counter() - t0) / 5)
    return N / best


def main() -> None:
    xml, js = pages()
    bare_parser = etree.XMLParser(resolve_entities=False, no_network=True)
    results = {
        "xml  ours": rate(lambda: parse_page(xml)),
        "xml  bare lxml": rate(lambda: etree.fromstring(xml, parser=bare_parser)),
        "json ours": rate(lambda: parse_page(js)),
        "json bare json.loads": rate(lambda: json.loads(js)),
    }
    print(f"page of {N} sessions: XML {len(xml) / 1024:.0f} KiB, JSON {len(js) / 1024:.0f} KiB")
    for name, value in results.items():
        print(f"{name:22s} {value:12,.0f} sessions/s")
    for kind, ours, bare in (
        ("xml", "xml  ours", "xml  bare lxml"),
        ("json", "json ours", "json bare json.loads"),
    ):
        print(
            f"{kind}: ours takes {results[bare] / results[ours]:.2f}x the bare parse (target 1.5x)"
        )


if __name__ == "__main__":
    main()
