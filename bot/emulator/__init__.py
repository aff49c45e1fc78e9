"""A faithful stand-in for Veeam Backup Enterprise Manager's REST API (the demo and tests).
Imports nothing of the bot's: it speaks EM's wire format as EM does."""
