"""A Prefect flow that runs a parameterised notebook through papermill's nublado engine.

Run by tests/integration/test_orchestrator.py with the Python of
``.venv-orchestrator`` (Prefect, papermill and this package), against the
test hub named by the environment (NUBLADO_HUB_URL, NUBLADO_USER,
NUBLADO_TOKEN)::

    python tests/orchestrator/prefect_flow.py IN.ipynb OUT.ipynb DATE

It is the flow of the "Scheduling notebooks" page, without the schedule.
"""

from __future__ import annotations

import sys

import papermill
from prefect import flow, task


@task(retries=0)
def run_notebook(source: str, output: str, date: str) -> str:
    """Run the notebook with its date parameter, in the user's lab."""
    papermill.execute_notebook(
        source,
        output,
        parameters={"date": date},
        engine_name="nublado",
        kernel_name="lsst",
        progress_bar=False,
        stop="spawned",
    )
    return output


@flow(name="nightly-notebook")
def nightly(source: str, output: str, date: str) -> str:
    """Run the nightly notebook for one date."""
    return run_notebook(source, output, date)


if __name__ == "__main__":
    print(nightly(sys.argv[1], sys.argv[2], sys.argv[3]))
