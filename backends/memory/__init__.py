"""Memory arithmetic: KV geometry, weight estimates, pre-load verdicts and per-turn checks (pure functions)."""
