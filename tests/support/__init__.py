"""Fixtures and helpers shared by the test packages (nothing here is a test)."""
