"""One handler per kind of failure, in an order that lets each one be reached.

Settings: JUPYTER_TOKEN and JUPYTER_URL, as for quickstart_server.py.
"""

import datetime
import os

from nublado_sync import (
    NubladoError,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoKernelDiedError,
    open_lab_session,
)

url = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888/")
token = os.environ["JUPYTER_TOKEN"]


def run_checked(session, code, context=None, timeout=None):
    """Run code and say in one line what happened."""
    try:
        output = session.run_python(code, context, timeout=timeout)
    except NubladoKernelDiedError as e:
        # The kernel's state is gone; e.result has the output that arrived.
        return f"kernel died ({e.status}): {e.error}"
    except NubladoExecutionError as e:
        # The code failed (or, NubladoOutputLostError, its output was cut):
        # e.error is the traceback, e.result everything the code produced.
        return f"failed: {e.result.ename}: {e.result.evalue}"
    except NubladoExecutionTimeoutError as e:
        # e.output is what it printed in time; the session is closed.
        return f"timed out after {e.timeout}, having printed {e.output!r}"
    except NubladoError as e:
        # The server, the connection, or a usage mistake.
        return f"{type(e).__name__}: {e}"
    return f"ok: {output!r}"


SLOW = "import time\nprint('started', flush=True)\nfor _ in range(600):\n    time.sleep(0.1)\n"

with open_lab_session(url, token) as session:
    print(run_checked(session, "print(6 * 7)"))  # ok: '42\n'
    print(run_checked(session, "1 / 0"))  # failed: ZeroDivisionError: division by zero
    print(run_checked(session, SLOW, timeout=datetime.timedelta(seconds=1)))  # timed out ...
    print(run_checked(session, "print(1)"))  # NubladoSessionClosedError: The session is closed ...
