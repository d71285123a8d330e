"""The store's SQL (asyncpg, PostgreSQL schema ``store``), one module per area."""
