"""The core: settings, store, data pipeline, classification and feedback services."""
