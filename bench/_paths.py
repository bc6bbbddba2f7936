"""What the benchmark records of the machine it ran on: no path of it.

Results and the page made from them are committed, so a traceback or a
command kept in them names files from the repository's root, and other
places by what they are.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from ._envs import REPO

__all__ = ["scrub_paths", "shown_args"]

_SITE_PACKAGES = re.compile(r"/[^\"'\s]*/site-packages/")
_STDLIB = re.compile(r"/[^\"'\s]*/lib/python3\.\d+/")


def scrub_paths(text: str, baseline: Optional[Path] = None) -> str:
    """Take this machine's paths out of a traceback kept in the results.

    The repository's own files are named from its root, a baseline
    checkout's as ``<baseline>/``, libraries as ``<site-packages>/`` and the
    standard library as ``<python>/``.
    """
    if baseline is not None:
        text = text.replace(f"{Path(baseline).resolve()}/", "<baseline>/")
    text = _SITE_PACKAGES.sub("<site-packages>/", text)
    text = text.replace(f"{REPO}/", "")
    return _STDLIB.sub("<python>/", text)


def shown_args(argv: Optional[List[str]]) -> List[str]:
    """The command's arguments, with no path of this machine in them.

    A baseline checkout is named by its commit, which is what a reader
    needs to repeat the run.
    """
    args = sys.argv[1:] if argv is None else argv
    shown: List[str] = []
    for previous, arg in zip(["", *args], args):
        if previous == "--baseline":
            shown.append(f"<checkout of {_commit_of(Path(arg))}>")
        else:
            shown.append(Path(arg).name if arg.startswith("/") else arg)
    return shown


def _commit_of(checkout: Path) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return done.stdout.strip()
