"""Alembic migrations of the store (``waimai db upgrade``)."""
