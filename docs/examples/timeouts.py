"""A call's timeout: the kernel is interrupted, the session closed, partial output kept.

Settings: JUPYTER_TOKEN and JUPYTER_URL, as for quickstart_server.py.
"""

import datetime
import os

from nublado_sync import NubladoExecutionTimeoutError, NubladoSessionClosedError, open_lab_session

url = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888/")
token = os.environ["JUPYTER_TOKEN"]

# Prints, then runs for a minute.
SLOW = "import time\nprint('started', flush=True)\nfor _ in range(600):\n    time.sleep(0.1)\n"

with open_lab_session(url, token) as session:
    try:
        session.run_python(SLOW, timeout=datetime.timedelta(seconds=2))
    except NubladoExecutionTimeoutError as e:
        print(e.timeout)  # 0:00:02
        print(repr(e.output))  # 'started\n': standard output before the deadline
        print(repr(e.result.stderr))  # '': e.result is the partial ExecutionResult
        print(session.closed)  # True
        print(e)  # jupyter: running code '...' timed out (and the deadline)
    try:
        session.run_python("print('again')")
    except NubladoSessionClosedError as e:
        print(e)  # The session is closed (timed out); open a new one
# Leaving the block still deletes the session and its kernel.
