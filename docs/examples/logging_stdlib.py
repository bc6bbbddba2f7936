"""The package's debug messages through the standard library's logging.

Settings: JUPYTER_TOKEN and JUPYTER_URL, as for quickstart_server.py.
"""

import logging
import os

from nublado_sync import open_lab_session

url = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888/")
token = os.environ["JUPYTER_TOKEN"]

# [configure]
logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
logging.getLogger("nublado_sync").setLevel(logging.DEBUG)
# [end configure]

with open_lab_session(url, token) as session:
    session.run_python("print(6 * 7)")
