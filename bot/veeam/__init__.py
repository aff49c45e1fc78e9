"""Everything that talks to Veeam Backup Enterprise Manager: logon, queries, parsing, filters.
Imports `bot.errors`, `bot.models` and `bot.config` (its settings)."""
