"""Operating the bot: `check`, the template check, `/healthz`, `/metrics` and the log set-up.
May import any folder; only the top-level modules (`app`, `cli`, `demo`) import it."""
