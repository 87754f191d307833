"""The merchants' Telegram bot (aiogram)."""
