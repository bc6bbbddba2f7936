"""Benchmarks of nublado_sync against the other Jupyter kernel clients.

Run everything with ``bench/run`` (or ``python -m bench`` from the repository
root); ``bench/run --quick`` is a smoke run of a few seconds per scenario.
"""
