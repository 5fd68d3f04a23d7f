"""loop.config.training."""
