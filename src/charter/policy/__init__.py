"""Policy: CEL rules, built-in functions, provenance and the decision engine."""
