"""Output as it arrives: execute's on_output callback.

Settings: JUPYTER_TOKEN and JUPYTER_URL, as for quickstart_server.py.
"""

import os

from nublado_sync import open_lab_session

url = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888/")
token = os.environ["JUPYTER_TOKEN"]


def show(output):
    """Print each chunk of standard output and error as it arrives."""
    if output["output_type"] == "stream":
        print(output["text"], end="", flush=True)


with open_lab_session(url, token) as session:
    result = session.execute(
        "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.5)\n",
        on_output=show,
    )
    # The result still holds everything.
    print(repr(result.stdout))  # '0\n1\n2\n'
