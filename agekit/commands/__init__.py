"""Subcommands of the `agekit` CLI, one module each."""
