"""The bot's exception tree. Every message is one sentence a user can act on."""


class BotError(Exception):
    """Base of every error the bot raises on purpose."""


class ConfigError(BotError):
    """The configuration file or environment is invalid. Lists every problem at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class SourceError(BotError):
    """Enterprise Manager could not be reached, or it rejected the request.

    `transient` marks what may pass if the same request is sent again: a 5xx, a refused or
    dropped connection, a timeout. Idempotent EM requests are retried on those."""

    transient = False


class EMUnavailable(SourceError):
    """EM did not answer usably this time (connection, timeout, 5xx); worth a retry."""

    transient = True


class EMRejected(SourceError):
    """EM answered with an error document (bad filter, unknown field, ...)."""

    def __init__(self, message: str, status: int) -> None:
        self.em_message = message
        self.status = status
        self.transient = status >= 500
        super().__init__(f"EM rejected the query: {message} (HTTP {status})")


class AuthError(SourceError):
    """EM refused the credentials."""


class ParseError(SourceError):
    """EM's answer could not be understood."""


class QueryError(BotError):
    """The user's query words are invalid. The message names the offending word."""


class NotifyError(BotError):
    """Slack refused or failed to take a message."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        outcome_unknown: bool = False,
        content: bool = False,
        code: str = "",
    ) -> None:
        self.retryable = retryable
        # Slack's error code (`thread_not_found`, `is_archived`), `http_503`, or "".
        self.code = code
        # True when Slack may have posted the message although we saw an error
        # (5xx or timeout on chat.postMessage): reconcile before posting again.
        self.outcome_unknown = outcome_unknown
        # True when Slack refused what the message holds (too long, invalid blocks): the same
        # message will never pass; a smaller form of it may.
        self.content = content
        super().__init__(message)


class StateError(BotError):
    """The state file cannot be used now. `exit_code` is 75 (try again later: locked, a
    permission or I/O error) or 78 (a path that cannot be created: fix the configuration).
    Never a reason to start as on a first run."""

    def __init__(self, message: str, *, exit_code: int = 75) -> None:
        self.exit_code = exit_code
        super().__init__(message)
