"""Stage: hold. With `[alerts] hold_for_retries`, a new failure waits for Veeam's retry; a
retry that succeeds within the hold settles it silently. The decision is
`problems.hold`; this stage keeps the held failures in the store (`held`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from bot.alerts.inventory import retry_window
from bot.alerts.problems import Plan, hold
from bot.alerts.windows import held_until
from bot.config.convert import HOLD_MARGIN, AutoHold
from bot.config.settings import Settings
from bot.models import TaskSession
from bot.store.codec import session_from_json, session_to_json
from bot.store.schema import HELD, PENDING
from bot.store.store import Store

log = logging.getLogger(__name__)


class Hold:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        owns: set[str],
        inventory: Callable[[], dict[str, dict[str, Any]]] = dict,
    ) -> None:
        self.settings, self.store, self.owns = settings, store, owns
        self.em = settings.veeam.name
        self.inventory = inventory  # the job records of this Enterprise Manager

    def held(self) -> list[TaskSession]:
        """Failures held back by `[alerts] hold_for_retries`, waiting for a retry. Read
        whatever the hold is now: a hold lowered or removed since they were held announces
        them at once (as one catch-up when there are many), never forgets them."""
        held = [session_from_json(v["s"]) for v in self.store.all_records(HELD).values()]
        return [s for s in held if s.em in self.owns]

    def hold_for(self) -> timedelta | Callable[[TaskSession], timedelta]:
        """The hold: one value, or each failure's own: with `hold_for_retries = "auto"` its
        job's retry window (RetryTimes x RetryTimeout) plus a margin, from the job inventory
        (AUTO_HOLD for a job it does not know); inside a maintenance window, until the
        window's end."""
        retries = self._retries()
        windows = self.settings.mutes.windows
        if not windows:
            return retries

        def of(s: TaskSession) -> timedelta:
            base = retries(s) if callable(retries) else retries
            until = held_until(windows, s)
            if until is None or s.ended is None:
                return base
            return max(base, until - s.ended)

        return of

    def _retries(self) -> timedelta | Callable[[TaskSession], timedelta]:
        configured = self.settings.alerts.hold_for_retries
        if not isinstance(configured, AutoHold):
            return configured
        windows: dict[tuple[str, str], timedelta] = {}
        by_name: dict[str, list[timedelta]] = {}

        def learn() -> None:  # once, and only when a failure is there to hold
            for rec in self.inventory().values():
                window = retry_window(rec)
                if window is not None:
                    name = str(rec.get("name", ""))
                    windows[(str(rec.get("server", "")).casefold(), name)] = window
                    by_name.setdefault(name, []).append(window)
            windows[("", "")] = configured  # learned

        def of(s: TaskSession) -> timedelta:
            if ("", "") not in windows:
                learn()
            window = windows.get((s.server.casefold(), s.job))
            if window is None and len(by_name.get(s.job, [])) == 1:
                window = by_name[s.job][0]  # one job of that name: EM's server name may differ
            return configured if window is None else window + HOLD_MARGIN

        return of

    def apply(
        self,
        todo: Plan,
        now: datetime,
        held: list[TaskSession],
        late: dict[str, float],
        mark: Callable[[list[TaskSession], datetime, dict[str, float]], None],
    ) -> tuple[list[TaskSession], list[tuple[str, TaskSession]], list[TaskSession]]:
        """Apply the retry hold to the new alerts; (what to announce now, recoveries, later
        failures to fold into those alerts)."""
        split = hold(self.em, todo, now, self.hold_for())
        was_held = {s.uid for s in held}
        if split.fixed:
            log.info("%d failure(s) fixed by a retry within the hold", len(split.fixed))
            self.store.record_silently(split.fixed, now, "settled by a later success")
        waiting = [s for s in split.wait if s.uid not in was_held]
        if waiting:
            self.store.put_records(HELD, {s.uid: {"s": session_to_json(s)} for s in waiting})
            self.store.drop_records(PENDING, [s.uid for s in waiting])
        due = [s for s in split.announce + split.folded if s.uid in was_held]
        if due:
            mark(due, now, late)  # pending, each in the channel its route gives
            self.store.drop_records(HELD, [s.uid for s in due])
        if split.fixed or waiting or due:
            self.store.commit()
        return split.announce, split.recoveries, split.folded
