"""Mutes: a VM or a job left out of the alerts for a while (maintenance, a known problem).

A muted failure is recorded but not announced; a mute expires on its own. The decisions are
pure functions of the mute, the session and `now`; `MuteBook` keeps mutes in the state
file. Every mute and unmute is also said in the alert channel, so nothing is hidden.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from bot.config.convert import parse_duration
from bot.config.render import rough_duration
from bot.errors import QueryError
from bot.models import TaskSession
from bot.store.schema import MUTES
from bot.store.store import Store

log = logging.getLogger(__name__)
MAX_MUTE = timedelta(days=30)
USAGE = (
    "usage: /veeam mute vm:NAME|job:NAME [server:NAME] for:4h [reason words], "
    "/veeam mutes, /veeam unmute <id>"
)


@dataclass(frozen=True)
class Mute:
    id: str
    kind: str  # "vm" or "job"
    name: str
    server: str  # "" for any backup server
    until: float  # epoch seconds
    reason: str
    by: str  # Slack user ID
    at: float

    def covers(self, s: TaskSession, now: datetime) -> bool:
        """Whether this mute holds back an alert for `s` at `now` (names match without
        regard to case)."""
        if now.timestamp() >= self.until:
            return False
        value = s.vm if self.kind == "vm" else s.job
        if value.casefold() != self.name.casefold():
            return False
        return not self.server or self.server.casefold() == s.server.casefold()

    def line(self) -> str:
        """How the alert channel is told (plain text; the caller escapes and mentions)."""
        where = f" on {self.server}" if self.server else ""
        until = datetime.fromtimestamp(self.until, UTC).strftime("%Y-%m-%d %H:%M UTC")
        length = rough_duration(self.until - self.at)
        why = f": {self.reason}" if self.reason else ""
        return f"{self.kind} {self.name}{where} for {length} (until {until}){why}"


def parse_mute(words: list[str], user: str, now: datetime) -> Mute:
    """`vm:NAME|job:NAME [server:NAME] for:4h [reason words]` → a Mute (QueryError with the
    usage line otherwise)."""
    kind = name = server = ""
    length: timedelta | None = None
    reason: list[str] = []
    for word in words:
        key, sep, value = word.partition(":")
        key = key.lower() if sep else ""
        if key in ("vm", "job") and value and not kind:
            kind, name = key, value
        elif key == "server" and value:
            server = value
        elif key == "for" and value:
            try:
                length = parse_duration(value)
            except ValueError:
                raise QueryError(f"for:{value} is not a duration like 4h or 2d\n{USAGE}") from None
        else:
            reason.append(word)
    if not kind:
        raise QueryError(f"say what to mute: vm:NAME or job:NAME\n{USAGE}")
    if length is None or length <= timedelta(0):
        raise QueryError(f"say for how long: for:4h\n{USAGE}")
    if length > MAX_MUTE:
        raise QueryError(f"a mute lasts at most 30 days (for:30d)\n{USAGE}")
    until = (now + length).timestamp()
    text = " ".join(reason)[:300]
    return Mute(secrets.token_hex(3), kind, name, server, until, text, user, now.timestamp())


def muted_by(mutes: list[Mute], s: TaskSession, now: datetime) -> Mute | None:
    return next((m for m in mutes if m.covers(s, now)), None)


class MuteBook:
    """Mutes in the state file (table `mutes`, keyed by id)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, mute: Mute) -> None:
        with self.store.lock:  # one writer of the state at a time
            self.store.put_records(MUTES, {mute.id: asdict(mute)})
            self.store.commit()

    def remove(self, mute_id: str) -> Mute | None:
        with self.store.lock:
            found = self.store.records(MUTES, [mute_id]).get(mute_id)
            if found is None:
                return None
            self.store.drop_records(MUTES, [mute_id])
            self.store.commit()
        return Mute(**found)

    def active(self, now: datetime) -> list[Mute]:
        mutes = [Mute(**v) for v in self.store.all_records(MUTES).values()]
        return sorted((m for m in mutes if m.until > now.timestamp()), key=lambda m: m.until)


def unmuted(store: Store, sessions: list[TaskSession], now: datetime) -> list[TaskSession]:
    """Stage: mute. Leave out what an active mute covers: recorded, not announced."""
    mutes = MuteBook(store).active(now)
    quiet = [s for s in sessions if mutes and muted_by(mutes, s, now)]
    if not quiet:
        return sessions
    log.info("%d failure(s) muted", len(quiet))
    store.record_silently(quiet, now, "muted")
    store.commit()
    skip = {s.uid for s in quiet}
    return [s for s in sessions if s.uid not in skip]
