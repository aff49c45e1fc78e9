"""The folders of `bot/` form layers: a module imports only from its own folder and from the
layers below it (each folder's `__init__.py` docstring says which). Nothing imports upward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parents[1] / "bot"

# Lowest first. A module may import its own folder and any layer before its own.
LAYERS: list[set[str]] = [
    {"bot", "bot.errors", "bot.models"},  # the vocabulary every layer shares
    {"bot.emulator"},  # stands alone: it imports nothing of the bot's but the vocabulary
    {"bot.config"},
    {"bot.veeam"},
    {"bot.store"},
    {"bot.slack"},
    {"bot.alerts"},
    {"bot.digest", "bot.slash"},  # side by side: neither imports the other
    {"bot.ops"},
    # The top of bot/: what puts the layers together, from the scheduler up to `python -m bot`.
    {"bot.schedule"},
    {"bot.app"},
    {"bot.demo"},
    {"bot.cli"},
    {"bot.__main__"},
]
TOP_LEVEL_MAX = 8


def unit(module: str) -> str:
    """The layer member a module belongs to: its folder (`bot.alerts`) or itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def rank(module: str) -> int:
    u = unit(module)
    for n, layer in enumerate(LAYERS):
        if u in layer:
            return n
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: place it")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(BOT.rglob("*.py")):
        rel = path.relative_to(BOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path) -> set[str]:
    """Every bot module a file imports, at the top or inside a function."""
    found: set[str] = set()
    known = modules()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "bot"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "bot":
                continue
            for a in node.names:  # `from bot import app` imports the module bot.app
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return found


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_import_runs_upward(module: str) -> None:
    mine = rank(module)
    upward = [
        m for m in sorted(imports(modules()[module]))
        if unit(m) != unit(module) and rank(m) >= mine and unit(m) not in LAYERS[0]
    ]  # fmt: skip
    assert not upward, f"{module} imports {upward}, which are not below it"


def test_the_rule_catches_an_upward_import() -> None:
    assert rank("bot.store.store") < rank("bot.alerts.pipeline")
    assert rank("bot.slash.commands") == rank("bot.digest.run")  # side by side, not below
    with pytest.raises(AssertionError, match="no layer"):
        rank("bot.nowhere")


def test_the_top_of_bot_stays_small() -> None:
    top = sorted(p.name for p in BOT.glob("*.py"))
    assert len(top) <= TOP_LEVEL_MAX, top


def test_each_folder_says_what_lives_there_and_what_it_may_import() -> None:
    for init in sorted(BOT.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert len(doc.splitlines()) == 2, f"{init}: a docstring of two lines"
        assert "import" in doc.lower(), f"{init}: say what it may import"
