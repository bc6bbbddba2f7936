"""Run every notebook of a directory, two at a time, and write a JUnit report.

Settings: JUPYTER_TOKEN and JUPYTER_URL, as for quickstart_server.py. The
notebooks are those below ./notebooks; the executed ones go to ./executed.
"""

import datetime
import os
import sys

from nublado_sync import open_lab_session, run_notebooks, write_junit_xml

url = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888/")
token = os.environ["JUPYTER_TOKEN"]


def fresh_session(name):
    # A new kernel for every notebook, deleted when the notebook ends.
    return open_lab_session(url, token, notebook_name=name)


result = run_notebooks(
    ["notebooks"],
    fresh_session,
    jobs=2,
    cell_timeout=datetime.timedelta(minutes=10),
    save_dir="executed",
)
for run in result.runs:
    print(f"{run.outcome.value:>8}  {run.name}  {run.message}")
write_junit_xml(result, "junit.xml")
sys.exit(0 if result.ok else 1)
