"""Reports built from the run records: the leaderboard tables (md, csv, tex)."""
