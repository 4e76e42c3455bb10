"""Reports built from the run records: the leaderboard (md, csv, tex), identifier statistics and costs."""
