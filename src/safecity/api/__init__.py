"""SafeCity api slice."""
