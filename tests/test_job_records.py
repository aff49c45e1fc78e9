"""The job inventory's records, folded from what EM lists (pure: `fold_all`, `fold_runs`):
a refresh's overlap read twice counts once, a job known only from its runs, a job EM no
longer lists kept and then forgotten after retention, the schedule before and after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.alerts.inventory import fold_all, fold_runs, job_key
from bot.models import Job, JobSession

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
JOB = Job("urn:veeam:Job:1", "Nightly SQL", "Backup", "VMware", "vbr01", "", True, True,
          T + 12 * H, 3, 10)  # fmt: skip
KEY = job_key("em", JOB.uid)
WATCHED = {"BackupJobSession"}


def run(n: int, start: datetime, result: str = "Success", *, job: Job = JOB,
        kind: str = "Backup", state: str = "Stopped") -> JobSession:  # fmt: skip
    end = start + 30 * timedelta(minutes=1) if state == "Stopped" else None
    return JobSession(f"urn:veeam:BackupJobSession:{n}", "BackupJobSession", f"{job.name}@{n}",
                      job.name, job.uid, kind, "vbr01", state, result, "", False, 100,
                      start, end)  # fmt: skip


def refresh(records: dict, jobs: list[Job], runs: list[JobSession], now: datetime,
            working: list[JobSession] | None = None) -> tuple[dict, list[str]]:  # fmt: skip
    return fold_all("em", records, (jobs, runs, working or []), WATCHED, now=now,
                    retention=14 * D)  # fmt: skip


def test_runs_read_again_in_the_overlap_count_once() -> None:
    runs = [run(n, T - (3 - n) * D) for n in range(3)]
    once = fold_runs(None, runs, [])
    twice = fold_runs(once, runs[1:], [])  # the next refresh reads the last two again
    assert twice["ok"] == once["ok"] and len(twice["ok"]) == 3
    assert twice["dur"] == once["dur"] == [1800.0] * 3
    assert twice["every"] == 2 * 86400  # learned from three daily runs: twice the gap


def test_a_failed_run_and_a_retry_are_history_not_successes() -> None:
    rec = fold_runs(None, [run(1, T - D), run(2, T - H, "Failed")], [])
    assert len(rec["ok"]) == 1 and rec["last"]["result"] == "Failed"
    assert rec["last_ok"] == (T - D + 30 * timedelta(minutes=1)).timestamp()


def test_a_job_the_job_list_does_not_name_is_known_from_its_runs() -> None:
    share = Job("urn:veeam:Job:nas", "Projects share", "NasBackup", "", "vbr01", "", True,
                True, None, 0, 0)  # fmt: skip
    out, gone = refresh({}, [JOB], [run(1, T - H, job=share, kind="NasBackup")], T)
    rec = out[job_key("em", share.uid)]
    assert (rec["name"], rec["type"], rec["listed"], rec["enabled"]) == (
        "Projects share", "NasBackup", False, True,
    )  # fmt: skip
    assert gone == [] and out[KEY]["listed"] is True


def test_a_job_em_no_longer_lists_is_kept_then_forgotten_after_retention() -> None:
    first, _ = refresh({}, [JOB], [run(1, T - D)], T)
    later, gone = refresh(first, [], [], T + D)  # deleted in EM
    assert later[KEY]["listed"] is False and later[KEY]["gone"] == (T + D).timestamp()
    assert gone == []
    kept, gone = refresh(later, [], [], T + 10 * D)
    assert kept[KEY]["gone"] == (T + D).timestamp() and gone == []  # since when, kept
    _, gone = refresh(kept, [], [], T + 16 * D)
    assert gone == [KEY]


def test_the_schedule_before_is_kept_for_the_change() -> None:
    first, _ = refresh({}, [JOB], [], T)
    assert first[KEY]["was"] is None  # first sight: nothing to compare with
    off = JOB._replace(schedule_enabled=False)
    second, _ = refresh(first, [off], [], T + H)
    assert (second[KEY]["was"], second[KEY]["enabled"]) == (True, False)


def test_runs_working_now_replace_those_of_the_refresh_before() -> None:
    busy = run(9, T - 5 * H, "None", state="Working")
    first, _ = refresh({}, [JOB], [], T, [busy])
    assert first[KEY]["working"] == {busy.uid: (T - 5 * H).timestamp()}
    second, _ = refresh(first, [JOB], [], T + H, [])
    assert second[KEY]["working"] == {}
