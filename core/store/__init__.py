"""The store: the engine and units of work, the tables, what makes texts the same, and the outbox
of notices between processes."""
