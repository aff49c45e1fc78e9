"""The digest's 7-day strip: one mark per job and local day for that day's worst job-session
result, an empty mark for a day with no run, so that a job that stopped running shows at a
glance: `🟩🟩🟥🟩⬜⬜⬜ Nightly SQL`. Pure: built from job sessions, the window's end and the
digest's time zone."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.config.render import MAX_SECTION, Renderer
from bot.models import JobSession

DAYS = 7
MOST = 30  # jobs shown; the rest are counted
MARKS = {"Failed": "🟥", "Warning": "🟨", "Success": "🟩", "": "⬜"}
_RANK = {"": 0, "Success": 1, "Warning": 2, "Failed": 3}


@dataclass
class DayStrip:
    end: datetime  # the digest window's end; its local day is the strip's last
    zone: str
    days: int = DAYS
    jobs: dict[str, list[str]] = field(default_factory=dict)  # job → worst result per day

    @property
    def first_day(self) -> date:
        return self.end.astimezone(ZoneInfo(self.zone)).date() - timedelta(days=self.days - 1)

    @property
    def start(self) -> datetime:
        """The first local day's midnight, as UTC: where the job-session query starts."""
        zone = ZoneInfo(self.zone)
        return datetime.combine(self.first_day, datetime.min.time(), zone)

    def add(self, s: JobSession, job: str) -> None:
        """Fold in one finished job session (others, and those outside the days, are left)."""
        if s.state != "Stopped" or s.ended is None or s.result not in _RANK or s.ended >= self.end:
            return
        day = (s.ended.astimezone(ZoneInfo(self.zone)).date() - self.first_day).days
        if not 0 <= day < self.days:
            return
        row = self.jobs.setdefault(job, [""] * self.days)
        if _RANK[s.result] > _RANK[row[day]]:
            row[day] = s.result

    def rows(self, most: int = MOST) -> tuple[list[tuple[str, str]], int]:
        """([(marks, job)], how many more): worst first (most failed days, then warning
        days, then the longest time since its last run), then by name."""

        def badness(item: tuple[str, list[str]]) -> tuple[int, int, int, str]:
            job, days = item
            idle = len(days) - len("".join("x" if d else " " for d in days).rstrip())
            return (-days.count("Failed"), -days.count("Warning"), -idle, job.lower())

        ordered = sorted(self.jobs.items(), key=badness)
        shown = [("".join(MARKS[d] for d in days), job) for job, days in ordered[:most]]
        return shown, max(0, len(ordered) - most)


def strip_text(r: Renderer, strip: DayStrip) -> str:
    """The 7-day strip, as many jobs as fit one section (names escaped can grow 5×)."""
    most = 30
    while True:
        rows, more = strip.rows(most)
        view = {"days": strip.days, "rows": [{"marks": m, "job": j[:80]} for m, j in rows],
                "more": more}  # fmt: skip
        text = r.text("digest_strip.md.j2", view)
        if len(text) <= MAX_SECTION or most <= 1:
            return text
        most -= 5 if most > 5 else 1
