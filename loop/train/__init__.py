"""loop.train.fit."""
