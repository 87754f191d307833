"""Fake external services for the tests (and local demos), driven by the real clients."""
