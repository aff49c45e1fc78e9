"""The configuration is declared once (bot/config/settings.py: each key's type, default,
bounds and doc); the example configuration and the README's key table must agree with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from bot.config.generate import example_toml, toml_value
from bot.config.load import load_settings
from bot.config.settings import SECTIONS, Settings, config_keys

ROOT = Path(__file__).resolve().parents[1]
DECLARED = {(name, f.name): f for name, cls in SECTIONS.items() for f in config_keys(cls)}


def test_the_example_config_is_written_from_the_declarations() -> None:
    assert (ROOT / "config" / "bot.toml").read_text() == example_toml(), (
        "config/bot.toml is out of date: python -m bot.config.generate > config/bot.toml"
    )


def test_every_key_is_in_the_example_with_its_default_and_loads_as_declared(
    tmp_path: Path,
) -> None:
    example = example_toml()
    raw = tomllib.loads(example)
    for (section, name), f in DECLARED.items():
        assert f.metadata["doc"], f"[{section}] {name} has no doc"
        if f.metadata["example"]:  # shown commented out, with an example value
            assert f"# {name} = {f.metadata['example']}" in example
            assert name not in raw.get(section, {})
        else:
            assert raw[section][name] == tomllib.loads(f"v = {toml_value(f.default)}")["v"]
    path = tmp_path / "bot.toml"
    path.write_text(example)
    loaded = load_settings({"BOT_CONFIG": str(path)})
    defaults = Settings()
    for section in ("veeam", "poll", "alerts", "jobs", "stale", "digest", "slash", "http"):
        assert getattr(loaded, section) == getattr(defaults, section), section


def readme_keys() -> dict[tuple[str, str], str]:
    """(section, key) → the default cell, from the README's table of config keys."""
    out: dict[tuple[str, str], str] = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"\| `\[(\w+)\] (\w+)`((?:, `\w+`)*) \|\s*([^|]*?)\s*\|", line)
        if not m:
            continue
        names = [m.group(2), *re.findall(r"`(\w+)`", m.group(3))]
        literals = re.findall(r"`([^`]+)`", m.group(4))
        for n, name in enumerate(names):
            out[(m.group(1), name)] = literals[n] if len(literals) == len(names) else ""
    return out


def test_the_readme_lists_every_key_and_no_other_with_the_declared_defaults() -> None:
    table = readme_keys()
    assert set(table) == set(DECLARED), "README 'Configuration' table and settings.py differ"
    for where, shown in table.items():
        f = DECLARED[where]
        if shown and not f.metadata["example"]:
            assert tomllib.loads(f"v = {shown}") == tomllib.loads(f"v = {toml_value(f.default)}"), (
                where
            )
