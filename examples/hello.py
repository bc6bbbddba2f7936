"""Runs in the kernel: what a cron job's check might look like."""

import platform
import sys

print(f"Hello from a Jupyter kernel: Python {platform.python_version()} on {sys.platform}")
total = sum(range(1, 101))
print(f"1 + 2 + ... + 100 = {total}")
assert total == 5050
