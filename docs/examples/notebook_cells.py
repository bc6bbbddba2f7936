"""Run a notebook cell by cell in a kernel session, on any Jupyter server.

Settings: JUPYTER_TOKEN and JUPYTER_URL, as for quickstart_server.py. The
notebook is analysis.ipynb in the current directory.
"""

import datetime
import os
from pathlib import Path

from nublado_sync import NubladoExecutionError, execute_notebook, open_lab_session

url = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888/")
token = os.environ["JUPYTER_TOKEN"]

source = Path("analysis.ipynb").read_text()

with open_lab_session(url, token) as session:
    try:
        executed = execute_notebook(
            session, source, name="analysis.ipynb", cell_timeout=datetime.timedelta(minutes=5)
        )
    except NubladoExecutionError as e:
        Path("analysis-failed.ipynb").write_text(e.notebook)
        raise
Path("analysis-out.ipynb").write_text(executed)
