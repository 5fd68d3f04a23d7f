"""loop.run."""
