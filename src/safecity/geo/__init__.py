"""SafeCity geo slice."""
