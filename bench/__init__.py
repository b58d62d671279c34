"""choreograph's benchmark suite: scripts that print figures (run with `make bench`), never tests.

Every figure is measured in one run on one broker, next to its baselines, so ratios stay meaningful
when the machine changes.
"""
