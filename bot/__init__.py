"""Veeam Enterprise Manager → Slack alerting bot."""

__version__ = "0.2.0"
