"""Trainers, one module per backend; each writes a new version and registers it as a candidate."""
