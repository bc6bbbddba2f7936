"""Run code on any Jupyter server: the example of the front page.

Settings: JUPYTER_TOKEN, a token the server accepts, and JUPYTER_URL
(http://127.0.0.1:8888/ when unset).
"""

import datetime
import os

from nublado_sync import open_lab_session

url = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888/")
token = os.environ["JUPYTER_TOKEN"]

with open_lab_session(url, token) as session:
    print(session.run_python("print(6 * 7)"), end="")  # 42
    result = session.execute(
        "import sys; print('hi'); sys.version_info[:2]",
        timeout=datetime.timedelta(seconds=30),
    )
    print(result.stdout.strip(), result.result["text/plain"])  # hi (3, 12)
