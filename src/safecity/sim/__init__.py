"""SafeCity sim slice."""
