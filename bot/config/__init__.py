"""Configuration: the settings file and environment (`settings`), the packaged files and the
Jinja templates that draw every message (`render`). Imports only `bot.errors` and `bot.models`."""
