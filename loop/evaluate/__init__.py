"""loop.evaluate.scoring."""
