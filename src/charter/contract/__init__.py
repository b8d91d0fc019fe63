"""Contracts: loading, validation, identity, registries and policy packs."""
