"""SafeCity tiers slice."""
