"""The `/veeam` surface: the query grammar, EM lookups, Block Kit answers and Bolt wiring."""
