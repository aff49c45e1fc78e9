"""The alert path: fetch → select → group → render → mark pending → send → record."""
