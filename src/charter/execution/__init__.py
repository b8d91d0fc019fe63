"""Executors: deterministic code that performs actions, exactly once per idempotency key."""
