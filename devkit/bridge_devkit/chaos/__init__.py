"""The chaos harness (``python bench/chaos.py``): plan, faults, fencing steps, checks, report."""
