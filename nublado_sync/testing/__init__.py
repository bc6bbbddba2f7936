r"""A fake Nublado for test suites: JupyterHub and JupyterLab on 127.0.0.1.

`MockJupyter` is a real HTTP server in a background thread that behaves like
a Nublado deployment: the hub login with its redirects and cookies, the hub's
and the lab's XSRF checks, the spawn form and progress stream, the lab's
OAuth round trip, the lab's REST API, the notebook execution extension and
the kernel WebSocket with the ``v1.kernel.websocket.jupyter.org`` framing.
The client under test therefore runs its real code path, with no Jupyter
installation and no network beyond 127.0.0.1. It is the synchronous
counterpart of the async client's ``MockJupyter``, with the same names.

.. code-block:: python

   from nublado_sync import NubladoImageByClass
   from nublado_sync.testing import MockJupyter

   with MockJupyter(users={"alice": "token-of-alice"}) as mock:
       mock.register_python_result("print(hello)", "hi\n")
       with mock.client("alice") as client:
           client.auth_to_hub()
           client.spawn_lab(NubladoImageByClass())
           client.wait_for_spawn()
           client.auth_to_lab()
           with client.lab_session() as session:
               assert session.run_python("print(hello)") == "hi\n"
               session.run_python("x = 6 * 7")  # runs for real
               assert session.run_python("print(x)") == "42\n"

With pytest, the ``mock_jupyter`` fixture gives each test a running mock
(see `nublado_sync.testing.pytest_plugin`).

.. warning::

   Code without a registered result is executed with `exec` in the test
   process. Never expose a mock to untrusted clients.

Importing this package does not import pytest; importing ``nublado_sync``
does not import this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _lazy

if TYPE_CHECKING:
    from ._kernel import StdinNotImplementedError
    from ._mock import MockJupyter
    from ._register import register_mock_jupyter
    from ._resolve import loopback_hosts
    from ._state import (
        MockJupyterAction,
        MockJupyterExecutionParameters,
        MockJupyterLabSession,
        MockJupyterState,
    )

__all__ = [
    "MockJupyter",
    "MockJupyterAction",
    "MockJupyterExecutionParameters",
    "MockJupyterLabSession",
    "MockJupyterState",
    "StdinNotImplementedError",
    "loopback_hosts",
    "register_mock_jupyter",
]

# Imported on first use: the pytest plugin of this package is loaded in every
# test run of an environment that has nublado_sync, fixture used or not.
__getattr__, __dir__ = _lazy.attach(
    __name__,
    {
        "MockJupyter": "_mock",
        "MockJupyterAction": "_state",
        "MockJupyterExecutionParameters": "_state",
        "MockJupyterLabSession": "_state",
        "MockJupyterState": "_state",
        "StdinNotImplementedError": "_kernel",
        "loopback_hosts": "_resolve",
        "register_mock_jupyter": "_register",
    },
)
