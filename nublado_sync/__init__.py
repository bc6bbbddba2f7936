"""A synchronous client for running code in JupyterLab kernels behind JupyterHub.

The blocking twin of ``rubin-nublado-client``: the same public names,
without ``async`` and ``await``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _lazy

if TYPE_CHECKING:
    from ._acks import AckPolicy
    from ._client import NubladoClient
    from ._discovery import DiscoveryClient
    from ._exceptions import (
        NubladoCancelledError,
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
        NubladoSpawnFormError,
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
    from ._notebooks._batch import (
        BatchResult,
        NotebookOutcome,
        NotebookRun,
        find_notebooks,
        run_notebooks,
    )
    from ._notebooks._junit import junit_xml, write_junit_xml
    from ._notebooks._plan import NotebookCell, NotebookHooks
    from ._notebooks._runner import execute_notebook
    from ._reconnect import ReconnectPolicy
    from ._reports import (
        SentryEventInfo,
        SlackCodeBlock,
        SlackMessage,
        SlackTextBlock,
        SlackTextField,
        sentry_before_send,
    )
    from ._retry import RetryPolicy
    from ._session import JupyterLabSession
    from ._session_manager import JupyterLabSessionManager, open_lab_session
    from ._token import find_token

__version__ = "0.1.0"

__all__ = [
    "AckPolicy",
    "BatchResult",
    "CodeContext",
    "DiscoveryClient",
    "ExecutionResult",
    "JupyterLabSession",
    "JupyterLabSessionManager",
    "NotebookCell",
    "NotebookExecutionError",
    "NotebookExecutionResult",
    "NotebookHooks",
    "NotebookOutcome",
    "NotebookRun",
    "NubladoCancelledError",
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
    "NubladoSpawnFormError",
    "NubladoSpawnTimeoutError",
    "NubladoTimeoutError",
    "NubladoUsageError",
    "NubladoWebError",
    "NubladoWebSocketError",
    "ReconnectPolicy",
    "RetryPolicy",
    "SentryEventInfo",
    "SlackCodeBlock",
    "SlackMessage",
    "SlackTextBlock",
    "SlackTextField",
    "SpawnProgressMessage",
    "__version__",
    "execute_notebook",
    "find_notebooks",
    "find_token",
    "junit_xml",
    "open_lab_session",
    "run_notebooks",
    "sentry_before_send",
    "write_junit_xml",
]

# Where each public name lives. Names are imported on first use so that
# importing the package (and starting the command-line tool, whose first
# request to the lab goes out before the kernel protocol modules load)
# stays cheap; see docs/benchmarks.rst.
_EXPORTS = {
    "AckPolicy": "_acks",
    "BatchResult": "_notebooks._batch",
    "CodeContext": "_models",
    "DiscoveryClient": "_discovery",
    "ExecutionResult": "_models",
    "JupyterLabSession": "_session",
    "JupyterLabSessionManager": "_session_manager",
    "NotebookCell": "_notebooks._plan",
    "NotebookExecutionError": "_models",
    "NotebookHooks": "_notebooks._plan",
    "NotebookExecutionResult": "_models",
    "NotebookOutcome": "_notebooks._batch",
    "NotebookRun": "_notebooks._batch",
    "NubladoCancelledError": "_exceptions",
    "NubladoClient": "_client",
    "NubladoDiscoveryError": "_exceptions",
    "NubladoError": "_exceptions",
    "NubladoExecutionError": "_exceptions",
    "NubladoExecutionTimeoutError": "_exceptions",
    "NubladoImage": "_images",
    "NubladoImageByClass": "_images",
    "NubladoImageByReference": "_images",
    "NubladoImageByTag": "_images",
    "NubladoImageClass": "_images",
    "NubladoImageSize": "_images",
    "NubladoKernelDiedError": "_exceptions",
    "NubladoOutputLostError": "_exceptions",
    "NubladoProtocolError": "_exceptions",
    "NubladoRedirectError": "_exceptions",
    "NubladoSessionClosedError": "_exceptions",
    "NubladoSpawnError": "_exceptions",
    "NubladoSpawnFormError": "_exceptions",
    "NubladoSpawnTimeoutError": "_exceptions",
    "NubladoTimeoutError": "_exceptions",
    "NubladoUsageError": "_exceptions",
    "NubladoWebError": "_exceptions",
    "NubladoWebSocketError": "_exceptions",
    "ReconnectPolicy": "_reconnect",
    "RetryPolicy": "_retry",
    "SentryEventInfo": "_reports",
    "SlackCodeBlock": "_reports",
    "SlackMessage": "_reports",
    "SlackTextBlock": "_reports",
    "SlackTextField": "_reports",
    "SpawnProgressMessage": "_models",
    "execute_notebook": "_notebooks._runner",
    "find_notebooks": "_notebooks._batch",
    "find_token": "_token",
    "junit_xml": "_notebooks._junit",
    "open_lab_session": "_session_manager",
    "run_notebooks": "_notebooks._batch",
    "sentry_before_send": "_reports",
    "write_junit_xml": "_notebooks._junit",
}

__getattr__, __dir__ = _lazy.attach(__name__, _EXPORTS)
