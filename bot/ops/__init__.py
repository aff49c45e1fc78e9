"""Operating the bot: `check`, `/healthz`, `/metrics` and the log set-up."""
