"""SafeCity warning slice."""
