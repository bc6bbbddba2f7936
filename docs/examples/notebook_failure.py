"""What the exception of a failing notebook cell tells.

Settings: JUPYTER_TOKEN and JUPYTER_URL, as for quickstart_server.py. The
notebook is analysis.ipynb in the current directory.
"""

import os
from pathlib import Path

from nublado_sync import NubladoExecutionError, open_lab_session

url = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888/")
token = os.environ["JUPYTER_TOKEN"]

source = Path("analysis.ipynb").read_text()

with open_lab_session(url, token, username="alice") as session:
    # [failure]
    try:
        session.execute_notebook(source, name="analysis.ipynb")
    except NubladoExecutionError as e:
        print(e.context.cell, e.context.cell_number)  # fails 3
        print(e.result.ename)  # ZeroDivisionError
        Path("analysis-failed.ipynb").write_text(e.notebook)  # executed up to the cell
        print(e)
    # [end failure]
