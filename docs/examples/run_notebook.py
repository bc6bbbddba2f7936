"""Run a whole notebook with a Rubin lab's execution extension.

Settings: NUBLADO_USER, NUBLADO_TOKEN, and NUBLADO_HUB_URL or
REPERTOIRE_BASE_URL; the user's lab must be running. The notebook is
analysis.ipynb in the current directory.
"""

import datetime
import os
import sys
from pathlib import Path

from nublado_sync import NubladoClient

username = os.environ["NUBLADO_USER"]
token = os.environ["NUBLADO_TOKEN"]
hub_url = os.environ.get("NUBLADO_HUB_URL")

with NubladoClient(username, token, hub_url=hub_url) as client:
    client.auth_to_hub()
    client.auth_to_lab()  # the lab must be running; an expired login is renewed by itself
    result = client.run_notebook(
        Path("analysis.ipynb").read_text(),
        kernel_name="lsst",
        read_timeout=datetime.timedelta(hours=2),
    )
Path("analysis-out.ipynb").write_text(result.notebook)
# [check]
if result.error is not None:  # a cell failed: reported here, not raised
    print(f"{result.error.name}: {result.error.value}")
    print(result.error.message)  # nbconvert's report: the cell's code and traceback
    sys.exit(1)
# [end check]
