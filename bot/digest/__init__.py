"""The daily digest: what it counts (`build`) and when and where it is posted (`run`).
Imports everything below it: `bot.alerts`, `bot.slack`, `bot.store`, `bot.veeam`, `bot.config`."""
