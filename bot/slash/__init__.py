"""The `/veeam` surface: the query grammar, EM lookups, Block Kit answers and the buttons.
Imports `bot.alerts`, `bot.slack`, `bot.store`, `bot.veeam`, `bot.config`; never `bot.digest`."""
