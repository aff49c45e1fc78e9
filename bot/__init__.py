"""Veeam Enterprise Manager → Slack alerting bot."""

__version__ = "0.1.0"
