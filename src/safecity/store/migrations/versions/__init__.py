"""Alembic revisions, one file each; every one is tested on SQLite and PostgreSQL."""
