"""Load generator for the leaderboard service: ``python -m loadtest --url URL --key KEY SCENARIO``."""
