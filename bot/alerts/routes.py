"""Routes: which channel an alert goes to (`[[alerts.routes]]`), as Alertmanager's route
tree, simplified to one level. The routes are tried in order; the first that matches takes
the alert, unless it says `continue`, in which case the routes below are tried too, and the
alert channel last. What no route takes goes to the alert channel.

Pure: `Router` compiles the routes once (each glob list to one case-insensitive regular
expression) and remembers, per (job, server, type, result), which routes can match, so that
a poll's thousands of sessions cost a dictionary look-up each and a VM glob only when a
route has one."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from bot.config.settings import Route
from bot.models import TYPE_SHORT, TaskSession


def globs(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regular expression for a list of shell-style globs, any case; None: any."""
    if not patterns:
        return None
    return re.compile("|".join(fnmatch.translate(p) for p in patterns), re.IGNORECASE)


@dataclass(frozen=True)
class Compiled:
    route: Route
    jobs: re.Pattern[str] | None
    vms: re.Pattern[str] | None
    servers: frozenset[str]
    types: frozenset[str]
    results: frozenset[str]

    def before_vm(self, job: str, server: str, type_: str, result: str) -> bool:
        """Whether everything but the VM matches (`type_` short: backup, replica)."""
        if self.servers and server.casefold() not in self.servers:
            return False
        if self.types and type_ not in self.types:
            return False
        if self.results and result not in self.results:
            return False
        return self.jobs is None or self.jobs.match(job) is not None


def compile_route(r: Route) -> Compiled:
    return Compiled(
        r, globs(r.jobs), globs(r.vms), frozenset(s.casefold() for s in r.servers),
        frozenset(r.types), frozenset(r.results),
    )  # fmt: skip


class Router:
    """The channels of an alert: `channels(s)` → [the one its problem opens in, copies]."""

    def __init__(self, routes: tuple[Route, ...], default: str) -> None:
        self.routes = [compile_route(r) for r in routes]
        self.default = default
        self._cache: dict[tuple[str, str, str, str], list[Compiled]] = {}

    def channels(self, s: TaskSession) -> list[str]:
        return self.channels_of(s.job, s.vm, s.em, TYPE_SHORT.get(s.type, s.type), s.result)

    def channels_of(self, job: str, vm: str, server: str, type_: str, result: str) -> list[str]:
        """The channels for these fields, in order, without repeats; `vm` "" (a job-level
        failure, a job that stopped running) matches only a route with no VM globs."""
        if not self.routes:
            return [self.default]
        key = (job, server, type_, result)
        candidates = self._cache.get(key)
        if candidates is None:
            candidates = [c for c in self.routes if c.before_vm(job, server, type_, result)]
            if len(self._cache) < 100_000:
                self._cache[key] = candidates
        out: list[str] = []
        for c in candidates:
            if c.vms is not None and (not vm or c.vms.match(vm) is None):
                continue
            if c.route.channel not in out:
                out.append(c.route.channel)
            if not c.route.cont:
                return out
        if self.default not in out:
            out.append(self.default)
        return out

    def concerning(self, kind: str, name: str, server: str = "") -> list[str]:
        """The route channels a mute of a VM or a job concerns (said there too): routes whose
        globs for that kind match the name (a route with globs only of the other kind does
        not; one with neither does) and whose servers include the mute's server."""
        out: list[str] = []
        for c in self.routes:
            if server and c.servers and server.casefold() not in c.servers:
                continue
            mine, other = (c.jobs, c.vms) if kind == "job" else (c.vms, c.jobs)
            if mine is None and other is not None:
                continue
            if mine is not None and mine.match(name) is None:
                continue
            if c.route.channel not in out and c.route.channel != self.default:
                out.append(c.route.channel)
        return out
