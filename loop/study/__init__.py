"""loop.study."""
