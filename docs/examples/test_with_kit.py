"""Tests of your own code against the testing kit's fake Nublado; run them with pytest."""

import pytest

from nublado_sync import NubladoClient, NubladoImageByClass, NubladoSpawnError
from nublado_sync.testing import MockJupyter, MockJupyterAction


def run_checks(username: str, token: str) -> str:
    """The code under test: run the checks in the user's lab."""
    with NubladoClient(username, token) as client:  # the hub from service discovery
        client.auth_to_hub()
        if client.is_lab_stopped():
            client.spawn_lab(NubladoImageByClass())
        client.wait_for_spawn()
        client.auth_to_lab()
        with client.lab_session() as session:
            return session.run_python("run_checks()")


def test_my_job(mock_jupyter: MockJupyter) -> None:
    mock_jupyter.register_python_result("run_checks()", "all good\n")
    assert run_checks("alice", mock_jupyter.token_for("alice")) == "all good\n"
    form = mock_jupyter.get_last_spawn_form("alice")
    assert form == {"image_class": "recommended", "size": "Large"}


@pytest.mark.mock_jupyter(use_subdomains=True)
def test_my_job_with_subdomains(mock_jupyter: MockJupyter) -> None:
    mock_jupyter.register_python_result("run_checks()", "all good\n")
    assert run_checks("bob", mock_jupyter.token_for("bob")) == "all good\n"


def test_my_job_when_the_spawn_fails(mock_jupyter: MockJupyter) -> None:
    mock_jupyter.fail_on("alice", MockJupyterAction.PROGRESS)
    with pytest.raises(NubladoSpawnError):
        run_checks("alice", mock_jupyter.token_for("alice"))
