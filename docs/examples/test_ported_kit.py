"""Tests written for the async client's kit, ported: ``async`` and ``await`` dropped."""

import datetime
from typing import Iterator

import pytest

from nublado_sync import NubladoClient, NubladoImageByClass
from nublado_sync.testing import MockJupyter, register_mock_jupyter

# conftest.py: the same fixtures, without RESPX and without the mocks of
# service discovery and Gafaelfawr (the kit serves discovery itself).


@pytest.fixture
def mock_jupyter() -> Iterator[MockJupyter]:
    with register_mock_jupyter() as mock:
        yield mock


@pytest.fixture
def client(mock_jupyter: MockJupyter) -> Iterator[NubladoClient]:
    token = MockJupyter.create_mock_token("rachel")
    with NubladoClient(username="rachel", token=token) as client:  # hub from discovery
        yield client


# The tests: unchanged but for await.


def test_order(client: NubladoClient) -> None:
    with pytest.raises(AssertionError):
        client.spawn_lab(NubladoImageByClass())  # before auth_to_hub
    client.auth_to_hub()
    with pytest.raises(AssertionError):
        client.wait_for_spawn()  # nothing spawned
    client.spawn_lab(NubladoImageByClass())
    client.wait_for_spawn()
    with pytest.raises(AssertionError):
        client.spawn_lab(NubladoImageByClass())  # already running


def test_set_spawn_delay(client: NubladoClient, mock_jupyter: MockJupyter) -> None:
    mock_jupyter.set_spawn_delay(datetime.timedelta(seconds=0.5))
    client.auth_to_hub()
    client.spawn_lab(NubladoImageByClass())
    start = datetime.datetime.now(tz=datetime.timezone.utc)
    client.wait_for_spawn()  # the delay runs from the first look at the progress
    elapsed = datetime.datetime.now(tz=datetime.timezone.utc) - start
    assert elapsed >= datetime.timedelta(seconds=0.5)


def test_register_python_result(client: NubladoClient, mock_jupyter: MockJupyter) -> None:
    mock_jupyter.register_python_result("What is six by nine?", "42")
    client.auth_to_hub()
    client.spawn_lab(NubladoImageByClass())
    client.wait_for_spawn()
    client.auth_to_lab()
    with client.lab_session() as session:
        assert session.run_python("What is six by nine?") == "42"
