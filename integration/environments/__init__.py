"""Environments: create, find by webhook key, change settings. Used by the CLI and the admin API."""
