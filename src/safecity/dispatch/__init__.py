"""SafeCity dispatch slice."""
