"""The alert path (fetch → select → hold → mute → plan → render → deliver → record), problems,
mutes and self-monitoring. Imports `bot.slack`, `bot.store`, `bot.veeam`, `bot.config`."""
