"""Real-time leaderboard service: Postgres is the truth, Redis holds ranks, WebSockets get live pushes."""

__version__ = "0.1.0"
