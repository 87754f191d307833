"""The webhook API for platforms (FastAPI)."""
