"""Where the token comes from: our own settings first, then Rubin's places.

Inside the Rubin Science Platform a lab (and a job started from it) finds
the user's token where ``lsst.rsp.get_access_token`` looks: files under the
Nublado runtime mounts, which Nublado refreshes, then the ``ACCESS_TOKEN``
variable, fixed when the process started. `find_token` looks there after
this package's own settings, so the command and scripts run inside a lab
need no configuration.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Tuple, Union

from ._exceptions import NubladoUsageError

__all__ = [
    "ENV_TOKEN",
    "ENV_TOKEN_FILE",
    "RUBIN_MOUNTS_DEFAULT",
    "find_token",
    "find_token_and_source",
]

ENV_TOKEN = "NUBLADO_TOKEN"  # noqa: S105 - the variable's name, not a token
ENV_TOKEN_FILE = "NUBLADO_TOKEN_FILE"  # noqa: S105
ENV_RUBIN_TOKEN = "ACCESS_TOKEN"  # noqa: S105
ENV_RUBIN_MOUNTS = "NUBLADO_RUNTIME_MOUNTS_DIR"
RUBIN_MOUNTS_DEFAULT = "/opt/lsst/software/jupyterlab"
"""Where Nublado mounts its runtime files when the variable is not set."""

# Inside the mounts directory, in the order lsst.rsp reads them.
_RUBIN_FILES = (("secrets", "token"), ("environment", "ACCESS_TOKEN"))

PathLike = Union[str, "os.PathLike[str]"]


def _read(path: Path, what: str) -> str:
    try:
        token = path.expanduser().read_text(encoding="utf-8").strip()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise NubladoUsageError(f"cannot read the token file {path} ({what}): {reason}") from None
    except UnicodeDecodeError:
        raise NubladoUsageError(
            f"the token file {path} ({what}) is not text; it should hold only the token"
        ) from None
    if not token:
        raise NubladoUsageError(
            f"the token file {path} ({what}) is empty; it should hold the token"
        )
    return token


def find_token_and_source(
    token_file: Optional[PathLike] = None, *, environ: Optional[Mapping[str, str]] = None
) -> Tuple[str, str]:
    """Find the token, and say where it came from (see `find_token`).

    Returns
    -------
    tuple of str
        The token and a description of its source (never the token).

    Raises
    ------
    NubladoUsageError
        No token was found, or a token file named by a setting cannot be
        read or is empty.
    """
    env = os.environ if environ is None else environ
    if token_file is not None:
        path = Path(token_file)
        return _read(path, "--token-file"), f"the file {path}"
    if env.get(ENV_TOKEN_FILE):
        path = Path(env[ENV_TOKEN_FILE])
        return _read(path, f"from {ENV_TOKEN_FILE}"), f"the file {path} ({ENV_TOKEN_FILE})"
    if env.get(ENV_TOKEN, "").strip():
        return env[ENV_TOKEN].strip(), ENV_TOKEN
    mounts = Path(env.get(ENV_RUBIN_MOUNTS) or RUBIN_MOUNTS_DEFAULT)
    for parts in _RUBIN_FILES:
        path = mounts.joinpath(*parts)
        # A missing file is normal outside a Rubin lab; one that is there
        # but unreadable or empty is a fault worth reporting.
        if path.exists():
            return _read(path, "Rubin's token"), f"the file {path}"
    if env.get(ENV_RUBIN_TOKEN, "").strip():
        return env[ENV_RUBIN_TOKEN].strip(), ENV_RUBIN_TOKEN
    raise NubladoUsageError(
        f"no token: set {ENV_TOKEN} or {ENV_TOKEN_FILE} (or use --token-file);"
        f" inside a Rubin lab {ENV_RUBIN_TOKEN} or {mounts / 'secrets' / 'token'} is used"
    )


def find_token(
    token_file: Optional[PathLike] = None, *, environ: Optional[Mapping[str, str]] = None
) -> str:
    """Find the user's token where this package and Rubin's labs keep it.

    The places, in order:

    1. ``token_file``, when given;
    2. the file named by ``NUBLADO_TOKEN_FILE``;
    3. ``NUBLADO_TOKEN``;
    4. inside the Rubin Science Platform, the files Nublado mounts in
       ``$NUBLADO_RUNTIME_MOUNTS_DIR`` (``/opt/lsst/software/jupyterlab``
       when unset): ``secrets/token``, then ``environment/ACCESS_TOKEN``;
    5. ``ACCESS_TOKEN``.

    The Rubin places are read in the order ``lsst.rsp.get_access_token``
    reads them: the mounted files first, since Nublado refreshes them while
    the variable keeps the value the process started with. Surrounding
    white space is removed.

    Parameters
    ----------
    token_file
        A file holding the token, which takes precedence over everything.
    environ
        Environment to read instead of `os.environ`.

    Returns
    -------
    str
        The token.

    Raises
    ------
    NubladoUsageError
        No token was found, or a token file cannot be read or is empty (the
        message names the file).
    """
    return find_token_and_source(token_file, environ=environ)[0]
