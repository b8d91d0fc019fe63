"""Identity and access: roles, principals, API tokens and the admin chain (docs/access.md)."""
