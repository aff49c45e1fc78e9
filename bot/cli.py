"""Subcommand bodies. Each reads the clock once and passes `now` down."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from bot import app
from bot.alerts.inventory import FIRST_LOOKBACK, fold_all, read_inventory
from bot.alerts.joblist import job_rows, plain_row, wanted
from bot.config.convert import parse_duration
from bot.config.load import load_settings
from bot.errors import QueryError
from bot.models import JOB_SESSION_OF, TYPE_SHORT, TaskSession
from bot.schedule import utcnow
from bot.slash.jobs import parse_jobs_words
from bot.slash.lookup import Answer, run_on
from bot.slash.query import parse_query

log = logging.getLogger(__name__)


def cmd_query(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    settings = load_settings(env, require=("veeam",))
    query = parse_query(
        " ".join(args.words), now=utcnow(), default_types=settings.veeam.session_types
    )
    with contextlib.ExitStack() as stack:
        answer = run_on(app.em_clients(settings, stack), query)
    for name, why in (answer.missing or {}).items():
        print(f"warning: Enterprise Manager {name} did not answer: {why}", file=sys.stderr)
    if args.json:
        print(json.dumps([s.as_json() for s in answer.sessions], ensure_ascii=False, indent=2))
    else:
        print(format_table(answer))
    return 0


def cmd_jobs(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`/veeam jobs` on the command line, read from EM now (the running bot's state file is
    its own): 30 days of runs, for the intervals."""
    settings = load_settings(env, require=("veeam",))
    kind, wanted_em = parse_jobs_words(args.words)
    now = utcnow()
    records: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        for name, client in app.em_clients(settings, stack).items():
            if wanted_em is not None and name.lower() != wanted_em.lower():
                continue
            server = next(s for s in settings.servers if s.server == name)
            streams = [JOB_SESSION_OF[t] for t in settings.veeam.session_types]
            read = read_inventory(client, streams, now - FIRST_LOOKBACK)
            out, _ = fold_all(server.label, {}, read, set(streams), now=now,
                              retention=settings.alerts.retention)  # fmt: skip
            records.update(out)
    shown = {s.label: s.server for s in settings.servers}
    if wanted_em is not None:
        shown = {k: v for k, v in shown.items() if v.lower() == wanted_em.lower()}
        if not shown:
            raise QueryError(f"em:{wanted_em} is not an Enterprise Manager in the configuration")
    rows = wanted(job_rows(records, settings, now, shown), kind)
    if args.json:
        print(json.dumps([r.as_json() for r in rows], ensure_ascii=False, indent=2))
        return 0
    for r in rows:
        print(plain_row(r, now))
    print(f"\n{len(rows)} job(s){f' ({kind})' if kind else ''}")
    return 0


def _cell(text: str, width: int) -> str:
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= width else first[: width - 1] + "…"


def format_table(answer: Answer) -> str:
    """A readable fixed-width table, newest first, with the match count and filter."""
    named = any(s.em for s in answer.sessions)
    head: tuple[str, ...] = ("ENDED (UTC)", "RESULT", "TYPE", "VM", "JOB", "SERVER", "REASON")
    if named:  # several Enterprise Managers: which one listed the session
        head = ("EM", *head)
    rows = [head] + [((_cell(s.em, 20),) if named else ()) + _row(s) for s in answer.sessions]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ]
    shown = len(answer.sessions)
    lines.append("")
    lines.append(
        f"{answer.total} match(es)" + (f", showing {shown}" if shown < answer.total else "")
    )
    for type_, flt in answer.filters.items():
        lines.append(f"filter ({type_}): {flt}")
    return "\n".join(lines)


def _row(s: TaskSession) -> tuple[str, ...]:
    ended = s.ended.strftime("%Y-%m-%d %H:%M") if s.ended else f"({s.state})"
    return (
        ended,
        s.result,
        TYPE_SHORT.get(s.type, s.type),
        _cell(s.vm, 28),
        _cell(s.job, 30),
        _cell(s.server, 26),
        _cell(s.reason, 70),
    )


def cmd_emulator(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from bot.emulator.data import SessionStore, generate
    from bot.emulator.server import Emulator

    now = utcnow()
    sessions = generate(
        args.sessions,
        now=now - parse_duration(args.end_offset),
        seed=args.seed,
        span=parse_duration(args.span),
        failure_rate=args.failure_rate,
    )
    if args.recent:  # the same recent sessions whatever the history size (benchmarks)
        sessions += generate(
            args.recent,
            now=now,
            seed=args.seed + 1,
            extras=False,
            span=timedelta(hours=1),
            failure_rate=args.failure_rate,
        )
    from bot.emulator.jobs import job_scenarios

    emu = Emulator(
        SessionStore(sessions),
        username=args.username,
        password=args.password,
        idle_timeout=args.idle_timeout,
        host=args.host,
        port=args.port,
        camel_case=args.camel,
        bom=args.bom,
        delay=args.delay,
    )
    if not args.no_job_scenarios:
        jobs, runs = job_scenarios(now)
        emu.job_list.add(jobs)
        emu.jobs.add(runs)
    print(
        f"EM emulator on http://{args.host}:{args.port} with {len(sessions)} task sessions "
        f"(user {args.username!r}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        emu.serve_forever()
    return 0


def cmd_poll(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return app.poll_once_command(load_settings(env, require=("veeam", "slack")), utcnow())


def cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return app.run_forever(load_settings(env, require=("veeam", "slack", "http")))


def cmd_digest(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    need = ("veeam",) if args.dry_run else ("veeam", "slack")
    settings = load_settings(env, require=need)
    return app.digest_command(settings, utcnow(), parse_duration(args.window), args.dry_run)


def cmd_demo(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from bot.demo import run_demo

    return run_demo(interval=args.interval, cycles=args.cycles, out=sys.stdout, clock=utcnow)


def cmd_check(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Every step from EM to Slack, one ✓/✗ line each; exit 1 when any failed."""
    from bot.config.render import Renderer
    from bot.errors import ConfigError
    from bot.ops.check import FAIL, OK, run_checks
    from bot.ops.template_check import check_templates

    try:
        settings = load_settings(env, require=("veeam",))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{FAIL} configuration: {problem}")
        print("    fix: python -m bot example-config prints every key with its meaning")
        return 78
    print(f"{OK} configuration: {settings.config_path} and the environment")

    def templates() -> str:
        count = check_templates(Renderer(settings.templates_dir))
        return f"{count} messages render from the sample sessions"

    lines = run_checks(settings, templates)
    for line in lines:
        print(line, flush=True)
    failed = sum(line.mark == FAIL for line in lines)
    print(f"\n{failed} step(s) failed" if failed else "\nall steps passed")
    return 1 if failed else 0


def cmd_example_config(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from bot.config.resources import example_config

    print(example_config(), end="")
    return 0
