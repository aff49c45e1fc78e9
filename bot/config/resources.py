"""Files that ship with the bot: the packaged templates and the example configuration.

An installed bot (`pip install .`) has them as package data (`bot/templates`,
`bot/config/example`),
read through importlib.resources; a source checkout has them in the top-level `templates/`
and `config/` folders, which pyproject.toml maps onto those packages.
"""

from __future__ import annotations

import importlib.resources
from importlib.resources.abc import Traversable
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[2]


def _folder(package: str, name: str) -> Traversable:
    try:
        return importlib.resources.files(package)
    except ModuleNotFoundError:  # a source checkout (or an editable install of one)
        return _CHECKOUT / name


def templates() -> Traversable:
    """The packaged templates folder."""
    return _folder("bot.templates", "templates")


def template_names() -> tuple[str, ...]:
    return tuple(sorted(p.name for p in templates().iterdir() if p.name.endswith(".j2")))


def example_config() -> str:
    """The documented example configuration (`config/bot.toml`), every key with its default."""
    return (_folder("bot.config.example", "config") / "bot.toml").read_text(encoding="utf-8")
