"""Everything that talks to Veeam Backup Enterprise Manager."""
