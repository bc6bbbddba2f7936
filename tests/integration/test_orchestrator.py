"""A real orchestrator (Prefect) runs a parameterised notebook through the engine, on the hub.

Prefect lives in ``.venv-orchestrator``, which scripts/test builds; without
it the test is skipped (and says how to build it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

from nublado_sync import NubladoClient

from ..hub_testbed import TestHub
from .test_notebook_runner import code, notebook

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv-orchestrator" / "bin" / "python"
FLOW = ROOT / "tests" / "orchestrator" / "prefect_flow.py"


@pytest.mark.skipif(
    not PYTHON.exists(), reason="no .venv-orchestrator: scripts/test builds it (Prefect)"
)
def test_prefect_flow_runs_a_notebook_in_the_hub(hub: TestHub, tmp_path: Path) -> None:
    source = tmp_path / "nightly.ipynb"
    source.write_text(
        json.dumps(
            notebook(
                code("defaults", "date = '2000-01-01'", "parameters"),
                code("use", "import os\nprint(date, os.environ['JUPYTERHUB_USER'])"),
            )
        )
    )
    output = tmp_path / "out.ipynb"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUBLADO_", "PREFECT_"))}
    env.update(
        {
            "NUBLADO_HUB_URL": hub.url,
            "NUBLADO_USER": "bob",
            "NUBLADO_TOKEN": hub.tokens["bob"],
            # Prefect's own state in the test's directory; no telemetry.
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            # Prefect's temporary API server (127.0.0.1) starts slowly on a
            # loaded two-core machine; its default 20 s is not enough there.
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "true",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        }
    )
    try:
        done = subprocess.run(
            [str(PYTHON), str(FLOW), str(source), str(output), "2026-12-01"],
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().endswith(str(output))
        node = nbformat.read(output, as_version=4)
        assert node.metadata.papermill.parameters == {"date": "2026-12-01"}
        assert node.cells[2].metadata.tags == ["injected-parameters"]
        assert node.cells[3].outputs[0].text == "2026-12-01 bob\n"
        # The engine stopped the lab it spawned.
        with NubladoClient("bob", hub.tokens["bob"], hub_url=hub.url) as client:
            client.auth_to_hub()
            assert client.is_lab_stopped()
    finally:
        hub.stop_all()
