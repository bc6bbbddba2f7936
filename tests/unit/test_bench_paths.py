"""The benchmark keeps no path of the machine it ran on in its results."""

from __future__ import annotations

from pathlib import Path

from bench._envs import REPO
from bench._paths import scrub_paths, shown_args


def test_a_traceback_keeps_no_machine_path(tmp_path: Path) -> None:
    baseline = tmp_path / "old-checkout"
    text = "\n".join(
        [
            f'  File "{REPO}/nublado_sync/_transport.py", line 1, in open_websocket',
            '  File "/opt/venv/lib/python3.11/site-packages/websocket/_core.py", line 2',
            '  File "/usr/lib/python3.13/threading.py", line 3, in wait',
            f'  File "{baseline}/nublado_sync/_session.py", line 4',
        ]
    )
    scrubbed = scrub_paths(text, baseline)
    assert scrubbed.splitlines() == [
        '  File "nublado_sync/_transport.py", line 1, in open_websocket',
        '  File "<site-packages>/websocket/_core.py", line 2',
        '  File "<python>/threading.py", line 3, in wait',
        '  File "<baseline>/nublado_sync/_session.py", line 4',
    ]


def test_the_command_shown_names_no_machine_path(tmp_path: Path) -> None:
    shown = shown_args(["--baseline", str(tmp_path), "--out", "/somewhere/scale.json"])
    # Not a git checkout: its commit is unknown, and its path is not shown.
    assert shown == ["--baseline", "<checkout of an unknown commit>", "--out", "scale.json"]
