"""The throughput benchmark (``python bench/throughput.py``): workload, runs, checks, report."""
