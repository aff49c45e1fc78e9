"""Command line: `python -m bot {run,poll,query,jobs,digest,demo,emulator,check,example-config}`.

This is the only module that reads `os.environ`; it hands it down. The clock is read in one
place, `bot.schedule.utcnow`, by the CLI's commands and the scheduler's jobs, and `now` is
passed down from there. stdout carries only each command's output; logs and errors go to
stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from bot import __version__, cli
from bot.errors import BotError, ConfigError, StateError
from bot.ops import logs

EX_USAGE, EX_TEMPFAIL, EX_CONFIG = 64, 75, 78


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EX_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bot", description="Veeam Enterprise Manager → Slack alerts.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    p.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level (default LOG_LEVEL or INFO); LOG_FORMAT=json writes JSON lines",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("run", help="poll on an interval, post the digest, serve /veeam")
    s.set_defaults(func=cli.cmd_run)

    s = sub.add_parser("poll", help="run one poll cycle and exit")
    s.add_argument("--once", action="store_true", required=True, help="one cycle, then exit")
    s.set_defaults(func=cli.cmd_poll)

    s = sub.add_parser("query", help="query EM with the /veeam grammar, e.g. failed since:3d")
    s.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    s.add_argument("words", nargs="*", help="query words (one argument or several)")
    s.set_defaults(func=cli.cmd_query)

    s = sub.add_parser(
        "jobs", help="every job from EM: last result, last success, next run, stale marks"
    )
    s.add_argument("--json", action="store_true", help="print a JSON array instead of lines")
    s.add_argument("words", nargs="*", help="[stale|disabled|running|failing] [em:NAME]")
    s.set_defaults(func=cli.cmd_jobs)

    s = sub.add_parser("digest", help="post the digest for the window ending now")
    s.add_argument("--dry-run", action="store_true", help="print the message, post nothing")
    s.add_argument("--window", default="24h", help="window length (default 24h)")
    s.set_defaults(func=cli.cmd_digest)

    s = sub.add_parser("demo", help="emulator + pipeline + console output; no tokens needed")
    s.add_argument("--interval", type=float, default=3.0, help="seconds between polls")
    s.add_argument("--cycles", type=int, default=0, help="stop after N polls (0: until Ctrl-C)")
    s.set_defaults(func=cli.cmd_demo)

    s = sub.add_parser("emulator", help="serve an emulated Enterprise Manager")
    s.add_argument("--port", type=int, default=9398)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--sessions", type=int, default=2000, help="generated task sessions")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--span", default="14d", help="history length (default 14d)")
    s.add_argument("--failure-rate", type=float, default=0.1, help="share of Failed+Warning")
    s.add_argument("--end-offset", default="0s", help="history ends this long before now")
    s.add_argument(
        "--recent",
        type=int,
        default=0,
        help="extra sessions in the last hour, the same for any --sessions",
    )
    s.add_argument("--username", default="demo")
    s.add_argument("--password", default="demo")
    s.add_argument("--idle-timeout", type=float, default=900.0, help="token idle timeout, s")
    s.add_argument("--camel", action="store_true", help="v13-style camelCase JSON keys")
    s.add_argument(
        "--no-job-scenarios",
        action="store_true",
        help="leave out the jobs that fail with no VM or stop running (a file share job, an "
        "agent job, a stale, a stuck and a disabled one)",
    )
    s.add_argument("--bom", action="store_true", help="prefix JSON answers with a UTF-8 BOM")
    s.add_argument("--delay", type=float, default=0.0, help="seconds before each query answer")
    s.set_defaults(func=cli.cmd_emulator)

    s = sub.add_parser("check", help="validate the configuration and templates, reach EM")
    s.set_defaults(func=cli.cmd_check)

    s = sub.add_parser(
        "example-config", help="print the documented example config/bot.toml (every key)"
    )
    s.set_defaults(func=cli.cmd_example_config)
    return p


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    environ = dict(os.environ) if env is None else dict(env)
    # Bolt would read this deprecated token from the process environment behind our back (and
    # it inverts Bolt's ssl_check); the bot never uses it, so it is removed here.
    if os.environ.pop("SLACK_VERIFICATION_TOKEN", None) is not None:
        print("warning: SLACK_VERIFICATION_TOKEN is deprecated and ignored", file=sys.stderr)
    name = "DEBUG" if args.verbose else (args.log_level or environ.get("LOG_LEVEL") or "INFO")
    level = getattr(logging, name.upper(), logging.INFO)
    logs.setup(level, environ.get("LOG_FORMAT", "text"))
    from stamina.instrumentation import set_on_retry_hooks

    from bot.veeam.client import log_retry

    set_on_retry_hooks([log_retry])
    try:
        return int(args.func(args, environ))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except StateError as exc:  # locked, busy, a permission or I/O error: 75; a bad path: 78
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
