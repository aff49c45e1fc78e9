"""Stage: hold. With `[alerts] hold_for_retries`, a new failure waits for Veeam's retry; a
retry that succeeds within the hold settles it silently. The decision is
`problems.hold`; this stage keeps the held failures in the store (`held`)."""

from __future__ import annotations

import logging
from datetime import datetime

from bot.alerts.problems import Plan, hold
from bot.config.settings import Settings
from bot.models import TaskSession
from bot.store.codec import session_from_json, session_to_json
from bot.store.schema import HELD, PENDING
from bot.store.store import Store

log = logging.getLogger(__name__)


class Hold:
    def __init__(self, settings: Settings, store: Store, owns: set[str]) -> None:
        self.settings, self.store, self.owns = settings, store, owns
        self.em = settings.veeam.name

    def held(self) -> list[TaskSession]:
        """Failures held back by `[alerts] hold_for_retries`, waiting for a retry. Read
        whatever the hold is now: a hold lowered or removed since they were held announces
        them at once (as one catch-up when there are many), never forgets them."""
        held = [session_from_json(v["s"]) for v in self.store.all_records(HELD).values()]
        return [s for s in held if s.em in self.owns]

    def apply(
        self,
        todo: Plan,
        now: datetime,
        held: list[TaskSession],
        late: dict[str, float],
        channel: str,
    ) -> tuple[list[TaskSession], list[tuple[str, TaskSession]], list[TaskSession]]:
        """Apply the retry hold to the new alerts; (what to announce now, recoveries, later
        failures to fold into those alerts)."""
        split = hold(self.em, todo, now, self.settings.alerts.hold_for_retries)
        was_held = {s.uid for s in held}
        if split.fixed:
            log.info("%d failure(s) fixed by a retry within the hold", len(split.fixed))
            self.store.record_silently(split.fixed, now, "fixed by a retry")
        waiting = [s for s in split.wait if s.uid not in was_held]
        if waiting:
            self.store.put_records(HELD, {s.uid: {"s": session_to_json(s)} for s in waiting})
            self.store.drop_records(PENDING, [s.uid for s in waiting])
        due = [s for s in split.announce + split.folded if s.uid in was_held]
        if due:
            self.store.mark_pending(due, channel, now, late=late)
            self.store.drop_records(HELD, [s.uid for s in due])
        if split.fixed or waiting or due:
            self.store.commit()
        return split.announce, split.recoveries, split.folded
