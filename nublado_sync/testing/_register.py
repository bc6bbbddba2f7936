"""``register_mock_jupyter``: the async client's fixture helper, for a real server."""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Optional

from ._mock import MockJupyter

__all__ = ["register_mock_jupyter"]


@contextlib.contextmanager
def register_mock_jupyter(
    router: Optional[object] = None,
    *,
    use_subdomains: bool = False,
    set_repertoire_url: bool = True,
    **options: Any,
) -> Iterator[MockJupyter]:
    """Run a `MockJupyter` that clients find by service discovery, for one test.

    The synchronous counterpart of the async client's helper of the same
    name: a fixture written for that one needs only its ``async`` and
    ``await`` dropped::

        @pytest.fixture
        def mock_jupyter() -> Iterator[MockJupyter]:
            with register_mock_jupyter() as mock:
                yield mock

    While it runs, ``REPERTOIRE_BASE_URL`` points at the mock's discovery
    service, so a `~nublado_sync.NubladoClient` made without a ``hub_url``
    finds it (the async client's tests mock service discovery for that). On
    a clean exit, calls made out of order that no client raised fail the
    test (`MockJupyter.check_order`).

    Parameters
    ----------
    router
        Accepted and ignored, so that ``register_mock_jupyter(respx_mock)``
        keeps working: this mock is a real server and routes nothing
        through RESPX.
    use_subdomains
        Serve each lab on its own host (off by default, as upstream).
    set_repertoire_url
        Point ``REPERTOIRE_BASE_URL`` at the mock's discovery service, which
        lists the hub only. Set it to `False` where the test has a
        discovery mock of its own for other services; give the clients
        ``hub_url=mock.url`` then.
    **options
        Further arguments for `MockJupyter`.

    Yields
    ------
    MockJupyter
        The running mock.

    Raises
    ------
    AssertionError
        At the end: some call was out of order and no client raised it.
    """
    del router  # this kit routes nothing through RESPX
    with MockJupyter(use_subdomains=use_subdomains, **options) as mock:
        previous = os.environ.get("REPERTOIRE_BASE_URL")
        if set_repertoire_url:
            os.environ["REPERTOIRE_BASE_URL"] = mock.discovery_url
        try:
            yield mock
        finally:
            if previous is None:
                os.environ.pop("REPERTOIRE_BASE_URL", None)
            else:
                os.environ["REPERTOIRE_BASE_URL"] = previous
        mock.check_order()
