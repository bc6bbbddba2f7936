"""The code a first cron job runs inside the lab: ``nublado-sync run check.py``."""

import platform

print(f"Python {platform.python_version()} on {platform.node()}")
