"""The composition root: the only place that builds concrete collaborators."""

from __future__ import annotations

from bot.settings import Settings
from bot.veeam.client import EMClient


def em_client(settings: Settings) -> EMClient:
    return EMClient(settings.veeam)
