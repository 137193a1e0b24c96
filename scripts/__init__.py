"""The `mpgpt` command: serve, migrate, simulate and the owner's maintenance commands."""
