"""What one poll did: counts, the errors met, the exit code of `poll --once`, the log line."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass
class PollResult:
    fetched: int = 0
    new: int = 0
    announced: int = 0
    pending: int = 0
    recovered: int = 0  # problems closed by a Success
    retries: int = 0  # EM requests and Slack posts sent again after a transient failure
    em_error: str = ""
    # em_unreachable (connection, timeout, 5xx), em_rejected (logon or query refused),
    # em_error (an answer the bot cannot read)
    em_error_kind: str = ""
    slack_error: str = ""

    @property
    def exit_code(self) -> int:
        if self.em_error:
            return 1
        # Something Slack could still take is left: alerts pending, or replies, recoveries
        # or updates that met a passing error (what Slack refuses for good is settled).
        return 2 if self.pending or self.slack_error else 0

    @property
    def outcome(self) -> str:
        """The word for the log line and the metrics: ok, em_error or slack_error."""
        return "em_error" if self.em_error else "slack_error" if self.slack_error else "ok"

    def log_line(self, server: str, seconds: float) -> str:
        """The poll as key=value pairs, one line (for log shippers and grep)."""
        error = self.em_error or self.slack_error
        return (
            f"poll server={server} outcome={self.outcome} fetched={self.fetched} new={self.new} "
            f"announced={self.announced} recovered={self.recovered} pending={self.pending} "
            f"retries={self.retries} ms={seconds * 1000:.0f}"
            + (f" error={json.dumps(error)}" if error else "")
        )

    def summary(self, seconds: float) -> str:
        return (
            f"fetched {self.fetched}, new {self.new}, announced {self.announced}, "
            f"pending {self.pending}, retries {self.retries}, {seconds:.2f}s"
        )
