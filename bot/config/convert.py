"""Converters of configuration values: each checks one value and turns it into what the
settings hold, or raises ValueError with what is wrong (the caller adds the file and key)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DURATION = re.compile(r"(\d+)\s*(ms|[smhdw])")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: object) -> timedelta:
    """`"90s"`, `"2m"`, `"24h"`, `"7d"`, `"1h30m"` → timedelta. Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string such as '90s' or '24h', got {text!r}")
    compact = text.strip().lower()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(compact):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not compact or pos != len(compact):
        raise ValueError(f"{text!r} is not a duration; use forms like '90s', '2m', '24h', '7d'")
    return timedelta(seconds=total)


Conv = Callable[[Any], Any]


def string(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v


def allowing(conv: Conv, allowed: str) -> Conv:
    """A converter that says its bounds (`allowed`, shown in the example configuration)."""
    conv.allowed = allowed  # type: ignore[attr-defined]
    return conv


def int_range(lo: int, hi: int) -> Conv:
    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"expected a whole number from {lo} to {hi}, got {v!r}")
        return v

    return allowing(conv, f"{lo} to {hi}")


def float_min(lo: float) -> Conv:
    def conv(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or v < lo:
            raise ValueError(f"expected a number >= {lo}, got {v!r}")
        return float(v)

    return allowing(conv, f"{lo:g} or more")


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def choices(allowed: tuple[str, ...], *, many: bool) -> Conv:
    def one(item: Any) -> str:
        for a in allowed:
            if isinstance(item, str) and item.lower() == a.lower():
                return a
        raise ValueError(f"{item!r} is not one of {', '.join(allowed)}")

    def conv(v: Any) -> Any:
        if not many:
            return one(v)
        if not isinstance(v, list) or not v:
            raise ValueError(f"expected a non-empty list of {', '.join(allowed)}")
        return tuple(one(i) for i in v)

    words = ", ".join(json.dumps(a) for a in allowed)
    return allowing(conv, f"{'one or more of' if many else 'one of'} {words}")


def string_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
        raise ValueError(f"expected a list of strings, got {v!r}")
    return tuple(v)


def positive_duration(v: Any) -> timedelta:
    d = parse_duration(v)
    if d <= timedelta(0):
        raise ValueError(f"{v!r} must be longer than zero")
    return d


def clock_time(v: Any) -> time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", v) if isinstance(v, str) else None
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"expected a time of day like '08:00', got {v!r}")
    return time(int(m.group(1)), int(m.group(2)))


def time_zone(v: Any) -> str:
    try:
        ZoneInfo(string(v))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{v!r} is not an IANA time zone such as 'Europe/Berlin'") from exc
    return str(v)


def em_url(v: Any) -> str:
    text = string(v).strip().rstrip("/")
    if not re.match(r"https?://[^/\s]+", text):
        raise ValueError(f"expected an http(s) URL such as https://em.corp.local:9398, got {v!r}")
    return text.removesuffix("/api")


def tls_verify(v: Any) -> bool | str:
    if isinstance(v, bool):
        return v
    text = string(v).strip()
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    if not Path(text).is_file():
        raise ValueError(f"expected true, false or the path of a CA bundle; no file at {text!r}")
    return text


class AutoHold(timedelta):
    """`hold_for_retries = "auto"`: each failure is held for its own job's retry window
    (from the job inventory) plus a margin; this value (Veeam's default of 3 retries 10
    minutes apart, plus the margin) holds a job the inventory does not know."""

    def __repr__(self) -> str:
        return "AutoHold()"


HOLD_MARGIN = timedelta(minutes=5)  # EM lists a retry's result up to a few minutes late
AUTO_HOLD = AutoHold(minutes=35)


def hold_duration(v: Any) -> timedelta:
    """A duration, or "auto" (AUTO_HOLD)."""
    if isinstance(v, str) and v.strip().lower() == "auto":
        return AUTO_HOLD
    return parse_duration(v)


def auto_or_duration(v: Any) -> timedelta | str:
    """ "auto", or a duration longer than zero."""
    if isinstance(v, str) and v.strip().lower() == "auto":
        return "auto"
    return positive_duration(v)


def per_job(v: Any) -> tuple[tuple[str, timedelta | None], ...]:
    """A table of job name → a duration, or "off" (None): `[stale.jobs]`."""
    if not isinstance(v, dict):
        raise ValueError(f'expected a table of job name = duration or "off", got {v!r}')
    out: list[tuple[str, timedelta | None]] = []
    for name, value in v.items():
        if isinstance(value, str) and value.strip().lower() == "off":
            out.append((name, None))
            continue
        try:
            out.append((name, positive_duration(value)))
        except ValueError as exc:
            raise ValueError(f'{name!r}: {exc}; or "off"') from None
    return tuple(out)


ROUTE_KEYS = ("channel", "jobs", "vms", "servers", "types", "results", "continue", "digest")


def _tables(v: Any, what: str, keys: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """An array of tables (`[[what]]`), each with only `keys`: [(its name in errors, it)]."""
    if not isinstance(v, list) or any(not isinstance(e, dict) for e in v):
        raise ValueError(f"expected [[{what}]] tables (an array of tables)")
    out = []
    for n, entry in enumerate(v, 1):
        where = f"{what.rsplit('.', 1)[-1].removesuffix('s')} #{n}"
        unknown = sorted(set(entry) - set(keys))
        if unknown:
            known = ", ".join(keys)
            raise ValueError(f"{where}: unknown key {unknown[0]!r} (known: {known})")
        out.append((where, entry))
    return out


def route_entries(v: Any) -> tuple[dict[str, Any], ...]:
    """`[[alerts.routes]]`: each a table with a channel and lists of globs or names. The
    values are checked here; `bot.config.settings.Route` holds them."""
    out = []
    for where, entry in _tables(v, "alerts.routes", ROUTE_KEYS):
        channel = entry.get("channel")
        if not isinstance(channel, str) or not channel.strip():
            raise ValueError(f'{where}: channel is required, an ID ("C0DBA") or "#name"')
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("jobs", "vms", "servers", "types", "results"):
            try:
                lists[key] = string_list(entry.get(key, []))
            except ValueError:
                raise ValueError(f"{where}: {key} must be a list of strings") from None
        types = choices(("backup", "replica"), many=False)
        results = choices(("Failed", "Warning"), many=False)
        try:
            lists["types"] = tuple(types(t) for t in lists["types"])
            lists["results"] = tuple(results(r) for r in lists["results"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        flags = {}
        for key in ("continue", "digest"):
            flag = entry.get(key, False)
            if not isinstance(flag, bool):
                raise ValueError(f"{where}: {key} must be true or false")
            flags[key] = flag
        out.append({"channel": channel.strip(), **lists, **flags})
    return tuple(out)


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WINDOW_KEYS = ("name", "days", "from", "to", "timezone", "jobs", "servers")


def window_entries(v: Any) -> tuple[dict[str, Any], ...]:
    """`[[mutes.windows]]`: recurring maintenance windows, each checked here."""
    out = []
    for where, entry in _tables(v, "mutes.windows", WINDOW_KEYS):
        name = entry.get("name", where)
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: name must be a string")
        try:
            days = string_list(entry.get("days", list(DAYS)))
            if not days or any(d.lower()[:3] not in DAYS for d in days):
                raise ValueError
        except ValueError:
            raise ValueError(f"{where}: days must list some of {', '.join(DAYS)}") from None
        try:
            start = clock_time(entry.get("from"))
            end = clock_time(entry.get("to"))
            zone = time_zone(entry.get("timezone", "UTC"))
            jobs = string_list(entry.get("jobs", []))
            servers = string_list(entry.get("servers", []))
        except ValueError as exc:
            raise ValueError(f"{where} ({name}): {exc}") from None
        if start == end:
            raise ValueError(f"{where} ({name}): from and to are the same time")
        out.append({"name": name.strip(), "days": tuple(DAYS.index(d.lower()[:3]) for d in days),
                    "start": start, "end": end, "timezone": zone, "jobs": jobs,
                    "servers": servers})  # fmt: skip
    return tuple(out)
