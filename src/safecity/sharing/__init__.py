"""SafeCity sharing slice."""
