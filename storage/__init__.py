"""Everything mpgpt must remember: SQLite through aiosqlite, repositories with plain SQL."""
