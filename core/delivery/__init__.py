"""Deliveries processed exactly once: signed webhooks from platforms and Telegram updates in
webhook mode."""
