"""SafeCity web slice."""
