"""Run code in a new kernel on any Jupyter server.

Settings: JUPYTER_TOKEN, a token the server accepts (``jupyter server``
reads the same variable), and JUPYTER_URL (http://127.0.0.1:8888/ when
unset; behind a hub, the lab's URL https://host/user/<name>/).
"""

import os

from nublado_sync import open_lab_session

url = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888/")
token = os.environ["JUPYTER_TOKEN"]  # sent as "Authorization: Bearer <token>"

with open_lab_session(url, token) as session:
    print(session.run_python("print(6 * 7)"), end="")  # 42
    session.run_python("x = 6")  # the kernel keeps state
    print(session.run_python("print(x * 7)"), end="")  # 42
