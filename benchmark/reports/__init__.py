"""Reports built from the run records: the leaderboard (md, csv, tex), identifier statistics, costs, popularity
groups, scaling and efficiency (with figures), and the self-contained ``index.html``."""

GROUP_SCHEMES = ("interactions", "items")
"""``leaderboard --groups`` choices: popularity groups with equal training interactions (default) or equal items
(:mod:`benchmark.reports.groups`); here so that the command line can list them without importing matplotlib."""
