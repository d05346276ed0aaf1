"""SafeCity store slice."""
