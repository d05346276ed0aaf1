"""Alembic migrations of the SafeCity schema, shipped inside the package."""
