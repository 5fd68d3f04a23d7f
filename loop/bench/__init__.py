"""loop.bench."""
