"""A faithful stand-in for Veeam Backup Enterprise Manager's REST API (for the demo and tests)."""
