"""Test support, by purpose: services (fixture value types), clients (HTTP and WebSocket), reference (the
ranking contract as a pure model), stores (what Postgres and Redis hold), processes (`leaderboard serve`)."""
