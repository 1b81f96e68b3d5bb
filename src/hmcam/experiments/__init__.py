"""Runnable experiments: attack runs over datasets, the demo, and the paper's sections 5.x."""
