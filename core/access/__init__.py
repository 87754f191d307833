"""Who may call: API clients and their keys, Telegram merchants and their invites."""
