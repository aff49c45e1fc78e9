"""Messages as readable terminal text (the demo's sink and `digest --dry-run`)."""

from __future__ import annotations

import re
from typing import Any

from bot.config.render import Message

ANSI = {"#E01E5A": "\033[1;31m", "#ECB22E": "\033[1;33m", "#2EB67D": "\033[1;32m"}
RESET, DIM = "\033[0m", "\033[2m"
EMOJI_CHARS = {
    ":red_circle:": "🔴",
    ":large_yellow_circle:": "🟡",
    ":large_green_circle:": "🟢",
    ":warning:": "⚠️",
    ":repeat:": "🔁",
    ":white_check_mark:": "✅",
    ":hourglass:": "⌛",
    ":eyes:": "👀",
}
_DATE = re.compile(r"<!date\^\d+\^[^|>]*\|([^>]*)>")


def unslack(text: str) -> str:
    """mrkdwn → terminal text: dates to their fallback, entities back to characters."""
    text = _DATE.sub(r"\1", text)
    for code, char in EMOJI_CHARS.items():
        text = text.replace(code, char)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("*", "")


def _block_lines(block: dict[str, Any], prefix: str, dim: str, end: str) -> list[str]:
    if block["type"] == "header":  # plain_text: shown as is, only emoji codes drawn
        text = block["text"]["text"]
        for code, char in EMOJI_CHARS.items():
            text = text.replace(code, char)
        return [text]
    if block["type"] == "section":
        return [prefix + ln for ln in unslack(block["text"]["text"]).splitlines()]
    if block["type"] == "context":
        return [prefix + dim + unslack(e.get("text", "")) + end for e in block["elements"]]
    return []


def format_message(message: Message, *, colour: bool, channel: str = "") -> str:
    att = message.attachments[0] if message.attachments else {}
    tint = ANSI.get(att.get("color", ""), "") if colour else ""
    end, dim = (RESET, DIM) if colour else ("", "")
    lines: list[str] = []
    for block in message.blocks:
        lines += _block_lines(block, "", dim, end)
    if lines and channel:
        lines[0] = f"{tint}{lines[0]}{end}   {dim}→ {channel}{end}"
    for block in att.get("blocks", []):
        lines += _block_lines(block, f"{tint}┃{end} ", dim, end)
    return "\n".join(lines) + "\n"
