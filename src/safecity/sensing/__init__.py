"""SafeCity sensing slice."""
