"""Run ``print(1)`` once with rubin-nublado-client and print the output.

The asynchronous twin of ``nublado-sync run --server-url URL -c 'print(1)'``
for the cold-start comparison: a fresh interpreter imports the client,
creates a session on the lab at ``argv[1]`` (token in ``NUBLADO_TOKEN``)
with the benchmark's ``lsst`` kernel,
runs the code, writes its output to stdout as soon as it has it, and deletes
the session. rubin-nublado-client reaches a lab only through its hub client,
so the session manager gets the same small stand-in for it as the benchmark
driver (``rnc_driver.LabShim``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "drivers"))

import structlog
from rnc_driver import USER, LabShim
from rubin.nublado.client import JupyterLabSessionManager


async def main(url: str, token: str) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    lab = LabShim(url, token)
    try:
        manager = JupyterLabSessionManager(
            username=USER,
            jupyter_client=lab,  # type: ignore[arg-type]
            kernel_name="lsst",
            max_websocket_size=None,
            logger=structlog.get_logger("rubin.nublado.client"),
        )
        async with manager as session:
            output = await session.run_python("print(1)", timeout=timedelta(seconds=60))
            sys.stdout.write(output)
            sys.stdout.flush()
    finally:
        await lab.client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], os.environ["NUBLADO_TOKEN"]))
