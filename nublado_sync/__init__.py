"""A synchronous client for running code in JupyterLab kernels behind JupyterHub.

The blocking twin of ``rubin-nublado-client``: the same public names,
without ``async`` and ``await``.
"""

from __future__ import annotations

from ._client import NubladoClient
from ._discovery import DiscoveryClient
from ._exceptions import (
    NubladoDiscoveryError,
    NubladoError,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoKernelDiedError,
    NubladoOutputLostError,
    NubladoProtocolError,
    NubladoRedirectError,
    NubladoSessionClosedError,
    NubladoSpawnError,
    NubladoSpawnTimeoutError,
    NubladoTimeoutError,
    NubladoUsageError,
    NubladoWebError,
    NubladoWebSocketError,
)
from ._images import (
    NubladoImage,
    NubladoImageByClass,
    NubladoImageByReference,
    NubladoImageByTag,
    NubladoImageClass,
    NubladoImageSize,
)
from ._models import (
    CodeContext,
    ExecutionResult,
    NotebookExecutionError,
    NotebookExecutionResult,
    SpawnProgressMessage,
)
from ._session import JupyterLabSession
from ._session_manager import JupyterLabSessionManager, open_lab_session

__version__ = "0.1.0"

__all__ = [
    "CodeContext",
    "DiscoveryClient",
    "ExecutionResult",
    "JupyterLabSession",
    "JupyterLabSessionManager",
    "NotebookExecutionError",
    "NotebookExecutionResult",
    "NubladoDiscoveryError",
    "NubladoError",
    "NubladoExecutionError",
    "NubladoClient",
    "NubladoExecutionTimeoutError",
    "NubladoImage",
    "NubladoImageByClass",
    "NubladoImageByReference",
    "NubladoImageByTag",
    "NubladoImageClass",
    "NubladoImageSize",
    "NubladoKernelDiedError",
    "NubladoOutputLostError",
    "NubladoProtocolError",
    "NubladoRedirectError",
    "NubladoSessionClosedError",
    "NubladoSpawnError",
    "NubladoSpawnTimeoutError",
    "NubladoTimeoutError",
    "NubladoUsageError",
    "NubladoWebError",
    "NubladoWebSocketError",
    "SpawnProgressMessage",
    "__version__",
    "open_lab_session",
]
