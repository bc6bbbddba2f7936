r"""The ``mock_jupyter`` pytest fixture: a running `~nublado_sync.testing.MockJupyter` per test.

Installed with ``nublado_sync``, this plugin is loaded by pytest through its
``pytest11`` entry point, so a test only asks for the fixture::

    from nublado_sync import NubladoImageByClass


    def test_lab(mock_jupyter):
        with mock_jupyter.client("alice") as client:
            client.auth_to_hub()
            client.spawn_lab(NubladoImageByClass())
            client.wait_for_spawn()
            client.auth_to_lab()
            with client.lab_session() as session:
                assert session.run_python("print(6 * 7)") == "42\n"

Where entry points are not loaded (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``, or a
source checkout that is not installed), enable it in the root
``conftest.py``::

    pytest_plugins = ["nublado_sync.testing.pytest_plugin"]

or on the command line with ``-p nublado_sync.testing.pytest_plugin``.

The fixture also sets ``REPERTOIRE_BASE_URL`` to the mock's discovery
service for the duration of the test, so a ``NubladoClient`` made without a
``hub_url`` finds the mock, as it would find Nublado in production. It is
`~nublado_sync.testing.register_mock_jupyter` as a fixture. Options
of `~nublado_sync.testing.MockJupyter` come from a ``mock_jupyter`` marker::

    @pytest.mark.mock_jupyter(use_subdomains=True, users={"bob": "t0ken"})
    def test_subdomains(mock_jupyter): ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator

import pytest

if TYPE_CHECKING:
    from ._mock import MockJupyter

__all__ = ["mock_jupyter", "pytest_configure"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``mock_jupyter`` marker.

    Parameters
    ----------
    config
        The pytest configuration.
    """
    config.addinivalue_line(
        "markers",
        "mock_jupyter(**options): options of the MockJupyter behind the mock_jupyter fixture",
    )


@pytest.fixture
def mock_jupyter(request: pytest.FixtureRequest) -> Iterator[MockJupyter]:
    """Provide a running `~nublado_sync.testing.MockJupyter`, stopped after the test.

    Keyword arguments of a ``mock_jupyter`` marker on the test are passed to
    `~nublado_sync.testing.MockJupyter`. ``REPERTOIRE_BASE_URL`` points at
    the mock's discovery service during the test. When the test ends, calls
    made out of order that no client raised fail it
    (`~nublado_sync.testing.MockJupyter.check_order`), as an error in the
    fixture's teardown.

    Parameters
    ----------
    request
        The pytest request, for the marker.

    Yields
    ------
    MockJupyter
        The running mock.

    Raises
    ------
    AssertionError
        At teardown: some call was out of order and no client raised it.
    """
    options: Dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("mock_jupyter"))):
        options.update(marker.kwargs)
    # Imported here: pytest loads this plugin in every run, fixture used or not.
    from ._register import register_mock_jupyter

    with register_mock_jupyter(**options) as mock:
        yield mock
