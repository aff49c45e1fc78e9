"""The emulator's data: realistic task sessions, indexed by end and start time."""

from __future__ import annotations

import bisect
import threading
import uuid
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from random import Random

from bot.emulator.filterlang import (
    FIELDS,
    FilterSyntaxError,
    Node,
    compile_filter,
    parse_filter,
    range_bounds,
)

TYPE_NAMES = {"replicatasksession": "ReplicaTaskSession", "backuptasksession": "BackupTaskSession"}


@dataclass(slots=True)
class EmSession:
    """One task session as the emulator stores it (superset of what the API shows)."""

    uid: str
    type: str
    name: str
    vm: str
    vm_uid: str
    job: str
    job_uid: str
    job_session_uid: str
    job_session_name: str
    server: str
    server_uid: str
    state: str
    result: str
    reason: str
    created: datetime
    ended: datetime | None
    total_size: int

    @property
    def guid(self) -> str:
        return self.uid.rsplit(":", 1)[-1]


def _guid(rng: Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Job:
    name: str
    kind: str  # "Replica" | "Backup"
    server: str
    vms: tuple[str, ...]
    uid: str
    server_uid: str


SERVERS = ("enterprise06.tech.local", "vbr-lon-01.corp.local", "vbr-fra-02.corp.local")
FAIL_REASONS = (
    "Error: There is not enough space on the disk. Failed to write data to the file "
    "[E:\\Replicas\\{vm}\\{vm}-flat.vmdk].",
    "Processing {vm} Error: An error occurred while quiescing the virtual machine. See the "
    "virtual machine's event log for details. (An error occurred while saving the snapshot: "
    "Failed to quiesce the virtual machine.)",
    "Error: Failed to connect to the host [esx07.corp.local]: The RPC server is unavailable. "
    "RPC function call failed. Function name: [GetSvcVersion].",
    "Task failed. Error: VDDK error: 13 (You do not have access rights to this file). "
    "Value: 0x000000000000000d",
    "Error: Failed to create VM snapshot.\nCannot create a quiesced snapshot because the create "
    "snapshot operation exceeded the time limit for holding off I/O in the frozen virtual "
    "machine.\nRetrying snapshot creation attempt (Failed to create production checkpoint.)",
    "Error: Cannot proceed with the job: existing backup meta file 'Job {vm}.vbm' on "
    "repository 'Repo01' is not synchronized with the DB.",
    "Error: The network path was not found. Failed to open storage for read access. "
    "Storage: [\\\\nas02\\veeam\\{vm}D2026.vbk].",
)
WARN_REASONS = (
    "Changed block tracking cannot be enabled: one or more VM disks are in independent mode.",
    "Unable to truncate Microsoft SQL Server transaction logs. Details: Failed to process "
    "'TruncateSQLLog' command. Failed to truncate transaction logs for SQL instances: MSSQLSERVER.",
    "Guest processing skipped (credentials not specified).",
    "Replica VM '{vm}_replica' has snapshots that were not created by Veeam Backup & "
    "Replication; they may affect the replica's performance.",
    "Hard disk 1 (0 B) was skipped: the disk is not found in the VM configuration.",
)
HOSTILE_VMS = (
    "vm with spaces",
    "sql;prod",
    "web,frontend",
    'say "hi"',
    "db (primary)",
    "<!channel>",
    "R&D <lab>",
    "сервер-БД-01",
    "数据库服务器",
    "a;Result==Success",
)
HOSTILE_REASONS = (
    "Disk full <!channel> <!here> ping <@U024BE7LH> see <http://evil.example|click me> & more",
    "Error: Failed to process [a;b,c] (quoted \"value\") with 'single' quotes & ampersand",
    "Ошибка: не удалось создать снимок. 快照创建失败。",
    "Error: line one\nline two\n  indented line three\n\nafter a blank line",
)

BASE_JOBS = (
    ("Replication Job 2", "Replica", 0, ("apache02", "apache03", "web01", "web02", "proxy01")),
    ("SQL Replica - Tier 1", "Replica", 1, ("sql01", "sql02", "sql03", "sqlreport01")),
    ("DR Replication (Site B)", "Replica", 2, ("dc01", "dc02", "exch01", "exch02", "file01")),
    ("Backup Job Fileservers", "Backup", 0, ("file01", "file02", "file03", "nas-gw01")),
    ("Exchange Backup", "Backup", 1, ("exch01", "exch02", "exch03")),
    ("Periodic Backup Copy Job\\Backup Job 1", "Backup", 2, ("app01", "app02", "app03")),
)


def build_jobs(rng: Random, extra: int) -> list[Job]:
    jobs = []
    server_uids = [_guid(rng) for _ in SERVERS]
    specs = list(BASE_JOBS)
    for k in range(extra):
        kind = "Replica" if k % 3 else "Backup"
        vms = tuple(f"vm-{k:03d}-{i:02d}" for i in range(5 + k % 36))
        specs.append((f"{kind} Job {k + 10}", kind, k % len(SERVERS), vms))
    for name, kind, srv, vms in specs:
        jobs.append(Job(name, kind, SERVERS[srv], vms, _guid(rng), server_uids[srv]))
    return jobs


class Maker:
    """Creates EmSession records for a job run with consistent UIDs and names."""

    def __init__(self, rng: Random, now: datetime) -> None:
        self.rng = rng
        self.now = now

    def run(
        self, job: Job, start: datetime, outcomes: list[tuple[str, str, str]]
    ) -> list[EmSession]:
        """outcomes: (vm, result, reason) for each VM processed in this run."""
        rng = self.rng
        js_guid = _guid(rng)
        start = _ms(start)
        js_name = f"{job.name}@{start:%Y-%m-%d %H:%M:%S}"
        t = f"{job.kind}TaskSession"
        out = []
        created = start
        for vm, planned, why in outcomes:
            created = _ms(created + timedelta(seconds=rng.uniform(2, 25)))
            dur = timedelta(seconds=min(6 * 3600, max(8, rng.lognormvariate(5.5, 1.0))))
            ended: datetime | None = _ms(created + dur)
            state, result, reason = "Completed", planned, why
            if ended is not None and ended > self.now:
                # EM shows a premature Success and no end time while a task runs
                ended, state, result, reason = None, "InProgress", "Success", ""
            out.append(
                EmSession(
                    uid=f"urn:veeam:{t}:{_guid(rng)}",
                    type=t,
                    name=f"{vm}@{created:%Y-%m-%d %H:%M:%S}",
                    vm=vm,
                    vm_uid=f"urn:VMware:Vm:{job.server_uid}.vm-{zlib.crc32(vm.encode()) % 99999}",
                    job=job.name,
                    job_uid=f"urn:veeam:Job:{job.uid}",
                    job_session_uid=f"urn:veeam:{job.kind}JobSession:{js_guid}",
                    job_session_name=js_name,
                    server=job.server,
                    server_uid=f"urn:veeam:BackupServer:{job.server_uid}",
                    state=state,
                    result=result,
                    reason=reason,
                    created=created,
                    ended=ended,
                    total_size=0 if result == "Failed" else rng.randrange(1, 512) * 2**30,
                )
            )
        return out


def _outcome(rng: Random, vm: str, failure_rate: float) -> tuple[str, str, str]:
    roll = rng.random()
    if roll < failure_rate * 0.65:
        return vm, "Failed", rng.choice(FAIL_REASONS).replace("{vm}", vm)
    if roll < failure_rate:
        return vm, "Warning", rng.choice(WARN_REASONS).replace("{vm}", vm)
    return vm, "Success", ""


def generate(
    n: int,
    *,
    now: datetime,
    seed: int = 1,
    span: timedelta = timedelta(days=14),
    failure_rate: float = 0.1,
    extras: bool = True,
) -> list[EmSession]:
    """n realistic task sessions over `span` before `now`, plus (with extras) the seed's
    two apache02 sessions and a recent job run full of hostile names and reasons."""
    rng = Random(seed)
    jobs = build_jobs(rng, extra=max(0, n // 3000))
    maker = Maker(rng, now)
    out: list[EmSession] = []
    span_s = span.total_seconds()
    calm = failure_rate * 0.2
    incident = (failure_rate - calm) / (0.9 - calm) if failure_rate < 0.9 else 1.0
    while len(out) < n:
        job = rng.choice(jobs)
        start = now - timedelta(seconds=rng.random() * span_s)
        # Failures cluster: a full repository or a dead proxy hits most VMs of a run.
        rate = 0.9 if rng.random() < incident else calm
        outcomes = [_outcome(rng, vm, rate) for vm in job.vms]
        run = maker.run(job, start, outcomes)
        out += run
        failed = [(s.vm, "Success", "") for s in run if s.result == "Failed"]
        last_end = max((s.ended for s in run if s.ended), default=None)
        if failed and last_end and rng.random() < 0.5:  # automatic retry of failed VMs
            out += maker.run(job, last_end + timedelta(minutes=10), failed)
    del out[n:]
    if extras:
        out += hostile_run(maker, now) + running_run(maker, now) + seed_apache02()
    out.sort(key=lambda s: s.created)
    return out


def hostile_run(maker: Maker, now: datetime) -> list[EmSession]:
    """A job run, ended about two hours ago, whose names and reasons try to break things."""
    job = Job(
        'Hostile "Job", (test); <b>&amp;</b>',
        "Replica",
        SERVERS[0],
        HOSTILE_VMS,
        "0badc0de-0000-4000-8000-000000000001",
        "7445e6ce-86f5-4171-b909-dac209c66563",
    )
    long_reason = "Error: " + " ".join(
        f"step {i}: failed to read block {i * 4096} from disk [scsi0:{i % 4}] (retrying)."
        for i in range(60)
    )
    reasons = [*HOSTILE_REASONS, long_reason]
    outcomes = [
        (vm, "Failed" if i % 3 else "Warning", reasons[i % len(reasons)])
        for i, vm in enumerate(HOSTILE_VMS)
    ]
    saved, maker.now = maker.now, now + timedelta(days=1)  # force every task completed
    run = maker.run(job, now - timedelta(hours=3), outcomes)
    maker.now = saved
    return run


def running_run(maker: Maker, now: datetime) -> list[EmSession]:
    """A job run still in progress: no EndTimeUTC, a premature Success, one Pending task."""
    job = Job(
        "Nightly Replica (running)",
        "Replica",
        SERVERS[1],
        ("erp01", "erp02", "erp03"),
        "0badc0de-0000-4000-8000-000000000002",
        "0badc0de-0000-4000-8000-0000000000aa",
    )
    run = maker.run(job, now - timedelta(minutes=2), [(vm, "Success", "") for vm in job.vms])
    for s in run:
        s.ended, s.state, s.total_size = None, "InProgress", 0
    run[-1].state = "Pending"
    return run


def seed_apache02() -> list[EmSession]:
    """The two sessions of the seed documentation page, verbatim."""
    server = "urn:veeam:BackupServer:7445e6ce-86f5-4171-b909-dac209c66563"
    rows = (
        (
            "efe448ad-6d52-496b-ba79-decd586713eb",
            "90e440bb-8af1-4e3f-8022-bfd89dd267a0",
            "2021-06-17 20:00:05",
            "2021-06-17T20:00:18.060",
            "2021-06-17T20:02:36.993",
        ),
        (
            "3be8eb42-7d94-4789-b2cf-891a2d9aed41",
            "c73c05f9-1f01-4a72-8126-c8fc8ed2df12",
            "2021-06-17 15:16:53",
            "2021-06-17T15:17:00.380",
            "2021-06-17T15:19:31.547",
        ),
    )
    out = []
    for guid, js, js_time, created, ended in rows:
        c = datetime.fromisoformat(created).replace(tzinfo=UTC)
        out.append(
            EmSession(
                uid=f"urn:veeam:ReplicaTaskSession:{guid}",
                type="ReplicaTaskSession",
                name=f"apache02@{c:%Y-%m-%d %H:%M:%S}",
                vm="apache02",
                vm_uid="",
                job="Replication Job 2",
                job_uid="urn:veeam:Job:1e7c5a4e-2a39-4e42-9b0a-4a7e3c0f2b11",
                job_session_uid=f"urn:veeam:ReplicaJobSession:{js}",
                job_session_name=f"Replication Job 2@{js_time}",
                server="enterprise06.tech.local",
                server_uid=server,
                state="Completed",
                result="Success",
                reason="",
                created=c,
                ended=datetime.fromisoformat(ended).replace(tzinfo=UTC),
                total_size=8589934592,
            )
        )
    return out


_FAR = datetime.max.replace(tzinfo=UTC)


class SessionStore:
    """Thread-safe, indexed session storage with a small cache of evaluated queries."""

    def __init__(self, sessions: list[EmSession] | None = None) -> None:
        self._lock = threading.Lock()
        self._types: dict[str, _TypeIndex] = {k: _TypeIndex() for k in TYPE_NAMES}
        self._by_uid: dict[str, EmSession] = {}
        self._cache: OrderedDict[tuple[str, str, str, bool], list[EmSession]] = OrderedDict()
        self.version = 0  # bumped by every change: what is derived from the sessions is kept
        self.add(sessions or [])

    def add(self, sessions: list[EmSession]) -> None:
        with self._lock:
            grouped: dict[str, list[EmSession]] = {k: [] for k in self._types}
            for s in sessions:
                grouped[s.type.lower()].append(s)
                self._by_uid[s.uid] = s
            for key, items in grouped.items():
                self._types[key].extend(items)
            self._cache.clear()
            self.version += 1

    def __len__(self) -> int:
        return len(self._by_uid)

    def all(self) -> list[EmSession]:
        with self._lock:
            return list(self._by_uid.values())

    def get(self, uid: str) -> EmSession | None:
        return self._by_uid.get(uid)

    def query(self, type_key: str, filter_text: str, sort: str, asc: bool) -> list[EmSession]:
        """Matching sessions, sorted. Raises FilterSyntaxError (an EM 400)."""
        key = (type_key, filter_text, sort, asc)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            index = self._types[type_key]
            if filter_text:
                node = parse_filter(filter_text)
                pred = compile_filter(node)
                matched = [s for s in index.candidates(node) if pred(s)]
            else:
                matched = list(index.by_created)
            if sort:
                attr = sort_attr(sort)
                matched.sort(key=lambda s: _sort_key(getattr(s, attr)), reverse=not asc)
            self._cache[key] = matched
            if len(self._cache) > 32:
                self._cache.popitem(last=False)
            return matched


def _sort_key(value: object) -> tuple[int, object]:
    return (1, _FAR) if value is None else (0, value)


def sort_attr(field: str) -> str:
    spec = FIELDS.get(field.lower())
    if spec is None:
        raise FilterSyntaxError(f"Unknown field [{field}]")
    return spec[0]


class _TypeIndex:
    def __init__(self) -> None:
        self.by_created: list[EmSession] = []
        self.created_keys: list[datetime] = []
        self.by_end: list[EmSession] = []
        self.end_keys: list[datetime] = []
        self.unended: list[EmSession] = []

    def extend(self, items: list[EmSession]) -> None:
        if len(items) > 64:  # bulk: re-sort once instead of inserting one by one
            self.by_created = sorted([*self.by_created, *items], key=lambda s: s.created)
            self.created_keys = [s.created for s in self.by_created]
            ended = [s for s in items if s.ended is not None]
            self.by_end = sorted([*self.by_end, *ended], key=lambda s: s.ended or _FAR)
            self.end_keys = [s.ended or _FAR for s in self.by_end]
            self.unended += [s for s in items if s.ended is None]
            return
        for s in items:
            i = bisect.bisect_right(self.created_keys, s.created)
            self.created_keys.insert(i, s.created)
            self.by_created.insert(i, s)
            if s.ended is None:
                self.unended.append(s)
                continue
            j = bisect.bisect_right(self.end_keys, s.ended)
            self.end_keys.insert(j, s.ended)
            self.by_end.insert(j, s)

    def candidates(self, node: Node) -> list[EmSession]:
        lo, hi = range_bounds(node, "ended")
        if lo or hi:
            a = bisect.bisect_left(self.end_keys, lo) if lo else 0
            b = bisect.bisect_right(self.end_keys, hi) if hi else len(self.end_keys)
            return self.by_end[a:b]
        lo, hi = range_bounds(node, "created")
        a = bisect.bisect_left(self.created_keys, lo) if lo else 0
        b = bisect.bisect_right(self.created_keys, hi) if hi else len(self.created_keys)
        return self.by_created[a:b]


def inject_failures(store: SessionStore, now: datetime, rng: Random) -> list[EmSession]:
    """A job run that just ended with one to three failures or warnings (for the demo)."""
    jobs = build_jobs(Random(1), extra=0)
    job = rng.choice(jobs)
    bad = set(rng.sample(job.vms, k=min(len(job.vms), rng.randint(1, 3))))
    outcomes = []
    for vm in job.vms:
        if vm in bad:
            failed = rng.random() < 0.6
            pool = FAIL_REASONS if failed else WARN_REASONS
            outcomes.append(
                (vm, "Failed" if failed else "Warning", rng.choice(pool).replace("{vm}", vm))
            )
        else:
            outcomes.append((vm, "Success", ""))
    maker = Maker(rng, now + timedelta(days=1))
    run = maker.run(job, now - timedelta(minutes=30), outcomes)
    for i, s in enumerate(run):
        s.ended = _ms(now - timedelta(seconds=len(run) - i))
    store.add(run)
    return run
