"""The code raised: NubladoExecutionError, and a CodeContext to say where the code came from.

Settings: JUPYTER_TOKEN and JUPYTER_URL, as for quickstart_server.py.
"""

import os

from nublado_sync import CodeContext, NubladoExecutionError, open_lab_session

url = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888/")
token = os.environ["JUPYTER_TOKEN"]

with open_lab_session(url, token) as session:
    # [error]
    try:
        session.run_python("1 / 0")
    except NubladoExecutionError as e:
        print(e.result.ename)  # ZeroDivisionError
        print(e)
        # jupyter: running code '1 / 0' failed
        # Error: ---------------------------------------------------------------------------
        # ZeroDivisionError                         Traceback (most recent call last)
        # ...
    # [end error]

    # [context]
    context = CodeContext(notebook="analysis.ipynb", cell="a1b2")
    try:
        session.run_python("1 / 0", context)
    except NubladoExecutionError as e:
        print(e.context.cell)  # a1b2
        print(e)
        # jupyter: cell a1b2 of notebook analysis.ipynb failed
        # Code: 1 / 0
        # Error: ...
    # [end context]
