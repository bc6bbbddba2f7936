"""Run ``print(1)`` once with nublado_sync and print the output.

The script a user would write instead of calling ``nublado-sync run``: a
fresh interpreter imports the package, opens a session on the lab at
``argv[1]`` (token in ``NUBLADO_TOKEN``) with the benchmark's ``lsst``
kernel, runs the code, writes its output
as soon as it has it, and deletes the session.
"""

from __future__ import annotations

import os
import sys

from nublado_sync import open_lab_session

if __name__ == "__main__":
    with open_lab_session(sys.argv[1], os.environ["NUBLADO_TOKEN"], kernel_name="lsst") as session:
        sys.stdout.write(session.run_python("print(1)"))
        sys.stdout.flush()
