"""SafeCity counter slice."""
