"""The state file: its tables, how it opens, locks and migrates, and retention.
Imports `bot.errors`, `bot.models`, `bot.config` and `bot.veeam`; nothing above them."""
