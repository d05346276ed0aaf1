"""SafeCity kernel slice."""
