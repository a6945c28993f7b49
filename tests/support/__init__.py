"""Helpers shared by the test suites (strategies, fixed keys, fake networks)."""
