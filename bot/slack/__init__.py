"""Slack: the Web API client (retries, pacing, error codes), the transports that receive events
(HTTP, Socket Mode) and the demo's console. Imports `bot.errors`, `bot.models`, `bot.config`."""
