"""Every example of the documentation runs, against the testing kit.

The Python examples of ``docs/*.rst`` live in ``docs/examples/`` and are
included into the pages with ``literalinclude``. Each is a small script that
reads its connection settings from the environment (``NUBLADO_HUB_URL``,
``NUBLADO_USER``, ``NUBLADO_TOKEN`` for the hub; ``JUPYTER_URL`` and
``JUPYTER_TOKEN`` for any Jupyter server), so the same file runs against a
real deployment. Here each one runs in a fresh interpreter against a
`MockJupyter`: the hub itself, or a user's running lab as a plain Jupyter
server. Its output, exit status and what it did to the mock are checked.

The pages themselves are checked too: a ``code-block`` of Python left in a
page must be marked as a fragment that cannot run (an rst comment
``.. not-runnable: <reason>`` right before it), must at least parse, and
every ``literalinclude`` must name an example that exists.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest
import requests

from nublado_sync import NotebookExecutionError, NotebookExecutionResult, NubladoImageByClass
from nublado_sync.testing import MockJupyter, MockJupyterAction, MockJupyterState

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
USER = "alice"
TOKEN = "token-of-alice"
# Generous: a run takes a second or two, but CI machines can be slow.
RUN_TIMEOUT = 120

# Names rubin-nublado-client 16.1 exports (its ``__all__``): the async
# fragments of the porting guide may import only these from it.
UPSTREAM_NAMES = frozenset(
    {
        "CodeContext",
        "JupyterAsyncClient",
        "JupyterLabSession",
        "JupyterLabSessionManager",
        "MockJupyter",
        "MockJupyterAction",
        "MockJupyterExecutionParameters",
        "MockJupyterLabSession",
        "MockJupyterState",
        "NotebookExecutionError",
        "NotebookExecutionResult",
        "NubladoClient",
        "NubladoDiscoveryError",
        "NubladoError",
        "NubladoExecutionError",
        "NubladoExecutionTimeoutError",
        "NubladoImage",
        "NubladoImageByClass",
        "NubladoImageByReference",
        "NubladoImageByTag",
        "NubladoImageClass",
        "NubladoImageSize",
        "NubladoProtocolError",
        "NubladoRedirectError",
        "NubladoSpawnError",
        "NubladoTimeoutError",
        "NubladoWebError",
        "NubladoWebSocketError",
        "SpawnProgressMessage",
        "register_mock_jupyter",
    }
)


# Notebooks for the notebook examples


def _code(source: str, cell_id: str) -> Dict[str, object]:
    return {
        "cell_type": "code",
        "execution_count": None,
        "id": cell_id,
        "metadata": {},
        "outputs": [],
        "source": source,
    }


def _notebook(*cells: Dict[str, object]) -> str:
    markdown = {"cell_type": "markdown", "id": "intro", "metadata": {}, "source": "# Checks"}
    body = {"cells": [markdown, *cells], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(body, indent=1)


GOOD_NOTEBOOK = _notebook(_code("x = 6", "setup"), _code("print(x * 7)", "answer"))
FAILING_NOTEBOOK = _notebook(
    _code("x = 6", "setup"), _code("print(x)", "second"), _code("x / 0", "fails")
)


# What each example is run against, and what it must do

Setup = Callable[[MockJupyter, Path, Dict[str, str]], None]
Check = Callable[[MockJupyter, Path, "subprocess.CompletedProcess[str]"], None]


@dataclass
class Case:
    """One run of an example.

    ``server`` is ``hub`` (the mock as a hub; ``NUBLADO_*`` settings),
    ``lab`` (alice's running lab as a plain Jupyter server; ``JUPYTER_*``
    settings), ``none``, ``pytest`` (the example is a test module) or
    ``cli`` (the example is code for ``nublado-sync run``).
    """

    server: str
    name: str = "default"
    stdout: Sequence[str] = ()
    stderr: Sequence[str] = ()
    exit_code: int = 0
    hub_url: bool = True
    lab_running: bool = False
    setup: Optional[Setup] = None
    check: Optional[Check] = None
    env: Dict[str, str] = field(default_factory=dict)


def _write(name: str, text: str) -> Setup:
    def setup(mock: MockJupyter, cwd: Path, env: Dict[str, str]) -> None:
        (cwd / name).write_text(text)

    return setup


def _state_is(state: MockJupyterState) -> Check:
    def check(mock: MockJupyter, cwd: Path, run: subprocess.CompletedProcess[str]) -> None:
        assert mock.get_state(USER) is state

    return check


def _no_sessions_left(mock: MockJupyter, cwd: Path, run: subprocess.CompletedProcess[str]) -> None:
    assert mock.get_sessions(USER) == []


def _token_file(mock: MockJupyter, cwd: Path, env: Dict[str, str]) -> None:
    path = cwd / "token"
    path.write_text(TOKEN + "\n")
    env["NUBLADO_TOKEN_FILE"] = str(path)


def _fail_progress(mock: MockJupyter, cwd: Path, env: Dict[str, str]) -> None:
    mock.fail_on(USER, MockJupyterAction.PROGRESS)


def _token_file_and_failing_spawn(mock: MockJupyter, cwd: Path, env: Dict[str, str]) -> None:
    _token_file(mock, cwd, env)
    _fail_progress(mock, cwd, env)


def _several_users(mock: MockJupyter, cwd: Path, env: Dict[str, str]) -> None:
    tokens = cwd / "tokens"
    tokens.mkdir()
    for user in ("alice", "bob", "carol"):
        (tokens / user).write_text(mock.token_for(user) + "\n")
    env["NUBLADO_TOKEN_DIR"] = str(tokens)


def _executed_answer(mock: MockJupyter, cwd: Path, run: subprocess.CompletedProcess[str]) -> None:
    executed = json.loads((cwd / "analysis-out.ipynb").read_text())
    answer = next(cell for cell in executed["cells"] if cell.get("id") == "answer")
    assert answer["outputs"][0]["text"] == "42\n"
    assert answer["execution_count"] == 2


def _batch_notebooks(mock: MockJupyter, cwd: Path, env: Dict[str, str]) -> None:
    (cwd / "notebooks" / "sub").mkdir(parents=True)
    (cwd / "notebooks" / "good.ipynb").write_text(GOOD_NOTEBOOK)
    (cwd / "notebooks" / "sub" / "bad.ipynb").write_text(FAILING_NOTEBOOK)


def _batch_reports(mock: MockJupyter, cwd: Path, run: subprocess.CompletedProcess[str]) -> None:
    executed = json.loads((cwd / "executed" / "good.ipynb").read_text())
    answer = next(cell for cell in executed["cells"] if cell.get("id") == "answer")
    assert answer["outputs"][0]["text"] == "42\n"
    assert (cwd / "executed" / "sub" / "bad.ipynb").exists()
    report = (cwd / "junit.xml").read_text()
    assert 'tests="2"' in report
    assert 'failures="1"' in report
    assert mock.get_sessions(USER) == []


def _partial_notebook(mock: MockJupyter, cwd: Path, run: subprocess.CompletedProcess[str]) -> None:
    partial = json.loads((cwd / "analysis-failed.ipynb").read_text())
    failed = next(cell for cell in partial["cells"] if cell.get("id") == "fails")
    assert failed["outputs"][-1]["ename"] == "ZeroDivisionError"


def _notebook_error(mock: MockJupyter, cwd: Path, env: Dict[str, str]) -> None:
    _write("analysis.ipynb", GOOD_NOTEBOOK)(mock, cwd, env)
    error = NotebookExecutionError(
        name="ZeroDivisionError",
        value="division by zero",
        message="An error occurred while executing cell 'answer'",
        traceback="Traceback (most recent call last): ...",
    )
    mock.register_notebook_result(
        GOOD_NOTEBOOK, NotebookExecutionResult(FAILING_NOTEBOOK, {}, error)
    )


def _ran_with_lsst(mock: MockJupyter, cwd: Path, run: subprocess.CompletedProcess[str]) -> None:
    parameters = mock.get_last_execution_parameters(USER)
    assert parameters is not None
    assert parameters.kernel_name == "lsst"
    assert json.loads((cwd / "analysis-out.ipynb").read_text()) == json.loads(GOOD_NOTEBOOK)


def _hub_url_printed(mock: MockJupyter, cwd: Path, run: subprocess.CompletedProcess[str]) -> None:
    assert run.stdout.splitlines()[-1].endswith(mock.url)


def _spawn_logged(mock: MockJupyter, cwd: Path, run: subprocess.CompletedProcess[str]) -> None:
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    spawn = next(line for line in lines if line["event"] == "Requested lab spawn")
    assert spawn["job"] == "nightly"
    assert spawn["user"] == USER
    assert spawn["level"] == "info"
    assert spawn["form"] == {"image_class": "recommended", "size": "Large"}
    assert "timestamp" in spawn
    assert all(line["level"] != "debug" for line in lines)


def _spawned_with(form: Dict[str, str]) -> Check:
    def check(mock: MockJupyter, cwd: Path, run: subprocess.CompletedProcess[str]) -> None:
        assert mock.get_last_spawn_form(USER) == form
        assert mock.get_state(USER) is MockJupyterState.LOGGED_IN  # stopped at the end
        assert mock.get_sessions(USER) == []

    return check


PORTING_OUT = (
    "Spawn: 0% Server requested",
    "Spawn: 100% Server ready at",
    "Spawn: 100% Server ready at",
    "42\n",
    "error a1b2",
    "alice: cell a1b2 of notebook checks.ipynb failed",
    "Code: 1 / 0",
    "ZeroDivisionError",
)

CASES: Dict[str, List[Case]] = {
    "error_reports.py": [
        Case(
            "lab",
            stdout=(
                "Error while running `checks.ipynb` cell `a1b2`\n",
                '"blocks": [',
                "*Exception type*\\nNubladoExecutionError",
                "*Code executed*\\n```\\n1 / 0\\n```",
                "{'image': 'w_2026_48', 'notebook': 'checks.ipynb', 'cell': 'a1b2'}",
            ),
            check=_no_sessions_left,
        )
    ],
    "check.py": [
        Case(
            "cli",
            stdout=("Python ",),
            setup=_token_file,
            check=_state_is(MockJupyterState.LOGGED_IN),
        )
    ],
    "discovery.py": [Case("hub", hub_url=False, check=_hub_url_printed)],
    "error_handling.py": [
        Case(
            "lab",
            stdout=(
                "ok: '42\\n'",
                "failed: ZeroDivisionError: division by zero",
                "timed out after 0:00:01, having printed 'started\\n'",
                "NubladoSessionClosedError: The session is closed (timed out); open a new one",
            ),
            check=_no_sessions_left,
        )
    ],
    "errors.py": [
        Case(
            "lab",
            stdout=(
                "ZeroDivisionError",
                "jupyter: running code '1 / 0' failed\nError: ",
                "a1b2",
                "jupyter: cell a1b2 of notebook analysis.ipynb failed\nCode: 1 / 0\nError: ",
            ),
        )
    ],
    "hub_flow.py": [
        Case("hub", stdout=("42\n",), check=_state_is(MockJupyterState.LOGGED_IN)),
        Case("hub", name="discovery", hub_url=False, stdout=("42\n",)),
    ],
    "intro.py": [Case("lab", stdout=("42\n", "hi (3, "))],
    "logging_stdlib.py": [
        Case(
            "lab",
            stderr=("nublado_sync DEBUG", "Created lab session", "Deleted lab session"),
        )
    ],
    "logging_structlog.py": [Case("hub", check=_spawn_logged)],
    "nightly_check.py": [
        Case(
            "hub",
            stdout=("Python ",),
            stderr=("[  0%] Server requested", "[100%] Server ready at"),
            setup=_token_file,
            # It stopped the lab it started.
            check=_state_is(MockJupyterState.LOGGED_IN),
        ),
        Case(
            "hub",
            name="lab-running",
            stdout=("Python ",),
            lab_running=True,
            setup=_token_file,
            # It left alone the lab that was there.
            check=_state_is(MockJupyterState.LAB_RUNNING),
        ),
        Case(
            "hub",
            name="spawn-fails",
            exit_code=4,
            stderr=("The lab did not start: Spawn failed!", "Server requested"),
            setup=_token_file_and_failing_spawn,
        ),
    ],
    "notebook_cells.py": [
        Case("lab", setup=_write("analysis.ipynb", GOOD_NOTEBOOK), check=_executed_answer),
        Case(
            "lab",
            name="failing",
            exit_code=1,
            stderr=("NubladoExecutionError: jupyter: cell 3 (In [3], id 'fails') of notebook",),
            setup=_write("analysis.ipynb", FAILING_NOTEBOOK),
            check=_partial_notebook,
        ),
    ],
    "batch.py": [
        Case(
            "lab",
            exit_code=1,
            stdout=(
                "  passed  notebooks/good.ipynb  \n",
                "  failed  notebooks/sub/bad.ipynb  cell 3 (id fails): ZeroDivisionError",
            ),
            setup=_batch_notebooks,
            check=_batch_reports,
        ),
    ],
    "notebook_failure.py": [
        Case(
            "lab",
            stdout=(
                "fails 3\n",
                "ZeroDivisionError\n",
                "alice: cell 3 (In [3], id 'fails') of notebook analysis.ipynb failed\n"
                "Code: x / 0\n",
            ),
            setup=_write("analysis.ipynb", FAILING_NOTEBOOK),
            check=_partial_notebook,
        )
    ],
    "outputs.py": [
        Case(
            "lab",
            stdout=(
                "'to stdout\\n'\n",
                "ok\n'to stdout\\n'\n'to stderr\\n'\n{'text/plain': '42'}\ndatetime.timedelta(",
                "'to stdout\\nto stderr\\n'\n",
                "[{'text/plain': '42'}]\nNone\n",
                "error\n'before\\n'\nZeroDivisionError\ndivision by zero\n",
            ),
        )
    ],
    "porting.py": [
        Case(
            "hub",
            name="by-class",
            stdout=PORTING_OUT,
            check=_spawned_with({"image_class": "latest-weekly", "size": "Small"}),
        ),
        Case(
            "hub",
            name="by-tag",
            env={"NUBLADO_IMAGE": "tag"},
            stdout=PORTING_OUT,
            check=_spawned_with(
                {"image_tag": "w_2026_40", "size": "Medium", "enable_debug": "true"}
            ),
        ),
        Case(
            "hub",
            name="by-reference-with-discovery",
            hub_url=False,
            env={"NUBLADO_IMAGE": "reference"},
            stdout=PORTING_OUT,
            check=_spawned_with(
                {"image_list": "ghcr.io/lsst-sqre/sciplat-lab:w_2026_40", "size": "Large"}
            ),
        ),
    ],
    "private_ca.py": [
        Case(
            "hub",
            env={"NUBLADO_CA_BUNDLE": requests.certs.where()},
            stdout=("Logged in to http://",),
        )
    ],
    "quickstart_server.py": [Case("lab", stdout=("42\n42\n",), check=_no_sessions_left)],
    "run_notebook.py": [
        Case(
            "hub",
            lab_running=True,
            setup=_write("analysis.ipynb", GOOD_NOTEBOOK),
            check=_ran_with_lsst,
        ),
        Case(
            "hub",
            name="cell-fails",
            lab_running=True,
            exit_code=1,
            stdout=("ZeroDivisionError: division by zero\n", "An error occurred"),
            setup=_notebook_error,
        ),
    ],
    "several_users.py": [
        Case(
            "hub",
            hub_url=False,
            stdout=("alice ", "bob ", "carol "),
            setup=_several_users,
        )
    ],
    "spawn_forms.py": [
        Case(
            "none",
            stdout=(
                "{'image_tag': 'w_2026_40', 'size': 'Small', 'enable_debug': 'true'}\n"
                "{'image_class': 'latest-daily', 'size': 'Huge'}\n"
                "{'image_list': 'ghcr.io/lsst-sqre/sciplat-lab:w_2026_40', 'size': 'Large'}\n"
                "Unknown size 'Enormous'; expected one of Fine, Diminutive, ",
            ),
        )
    ],
    "spawn_progress.py": [
        Case("hub", stdout=("[  0%] Server requested\n", "[100%] Server ready at ")),
        Case(
            "hub",
            name="spawn-fails",
            exit_code=4,
            stdout=("The lab did not start: Spawn failed!\nServer requested\n",),
            setup=_fail_progress,
        ),
    ],
    "streaming.py": [Case("lab", stdout=("0\n1\n2\n'0\\n1\\n2\\n'\n",))],
    "test_ported_kit.py": [Case("pytest", stdout=("3 passed",))],
    "test_with_kit.py": [Case("pytest", stdout=("3 passed",))],
    "timeouts.py": [
        Case(
            "lab",
            stdout=(
                "0:00:02\n'started\\n'\n''\nTrue\n",
                "jupyter: running code 'import time' (and 3 more lines) timed out\n"
                "Code execution timed out after 2.00s\n",
                "The session is closed (timed out); open a new one\n",
            ),
            check=_no_sessions_left,
        )
    ],
}


def _cases() -> List[Tuple[str, Case]]:
    return [(name, case) for name in sorted(CASES) for case in CASES[name]]


def _assert_in_order(text: str, parts: Sequence[str], what: str) -> None:
    position = 0
    for part in parts:
        found = text.find(part, position)
        assert found >= 0, f"{what} lacks {part!r} (after position {position}):\n{text}"
        position = found + len(part)


def _start_lab(mock: MockJupyter) -> None:
    with mock.client(USER) as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        client.wait_for_spawn()


def _base_env() -> Dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("NUBLADO_", "JUPYTER_", "REPERTOIRE_"))
    }
    # This checkout's package, also where it is not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    # The mock is on 127.0.0.1 (and *.nublado.test with subdomains): never via a proxy.
    env["NO_PROXY"] = env["no_proxy"] = ",".join(
        p for p in ("127.0.0.1", "localhost", ".nublado.test", env.get("NO_PROXY")) if p
    )
    return env


def _command(case: Case, path: Path) -> List[str]:
    if case.server == "pytest":
        # The plugin is named explicitly for where entry points are not loaded.
        plugins = ["-p", "no:cacheprovider", "-p", "nublado_sync.testing.pytest_plugin"]
        return [sys.executable, "-m", "pytest", "-q", *plugins, str(path)]
    if case.server == "cli":
        # As in the first cron job of the quickstart.
        options = ["-q", "--timeout", "600", "--stop"]
        return [sys.executable, "-m", "nublado_sync", "run", *options, str(path)]
    return [sys.executable, str(path)]


def test_every_example_has_a_case() -> None:
    examples = sorted(path.name for path in EXAMPLES.iterdir() if path.suffix == ".py")
    assert examples == sorted(CASES), "each file of docs/examples needs an entry in CASES"


@pytest.mark.parametrize(
    ("example", "case"), _cases(), ids=[f"{name}-{case.name}" for name, case in _cases()]
)
def test_example_runs(example: str, case: Case, tmp_path: Path) -> None:
    path = EXAMPLES / example
    env = _base_env()
    env.update(case.env)
    with MockJupyter(users={USER: TOKEN}, api_tokens=case.server == "lab") as mock:
        if case.server in ("hub", "cli"):
            env["REPERTOIRE_BASE_URL"] = mock.discovery_url
            env["NUBLADO_USER"] = USER
            env["NUBLADO_TOKEN"] = TOKEN
            if case.hub_url:
                env["NUBLADO_HUB_URL"] = mock.url
        if case.server == "lab" or case.lab_running:
            _start_lab(mock)
        if case.server == "lab":
            env["JUPYTER_URL"] = mock.lab_url(USER)
            env["JUPYTER_TOKEN"] = TOKEN
        if case.setup is not None:
            case.setup(mock, tmp_path, env)
        run = subprocess.run(
            _command(case, path),
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        report = f"exit {run.returncode}\n--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}"
        assert run.returncode == case.exit_code, report
        _assert_in_order(run.stdout, case.stdout, "stdout")
        _assert_in_order(run.stderr, case.stderr, "stderr")
        if case.check is not None:
            case.check(mock, tmp_path, run)
    assert TOKEN not in run.stdout + run.stderr, "an example printed the token"


# The pages

_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. (?P<name>[a-z-]+)::[ \t]*(?P<arg>.*)$")
_PYTHON = {"python", "python3", "py", "py3", "pycon", "ipython", "ipython3"}
_MARK = re.compile(r"^\s*\.\. not-runnable:\s*(?P<reason>\S.*)$")


@dataclass
class Block:
    """A code block of a page."""

    page: str
    line: int
    language: str
    reason: Optional[str]
    code: str


def _pages() -> List[Path]:
    return sorted(DOCS.glob("*.rst"))


def _body(lines: List[str], start: int, indent: str) -> Tuple[List[str], str]:
    """Return the options and the content of the directive at ``start``."""
    options: List[str] = []
    content: List[str] = []
    i = start + 1
    while i < len(lines) and lines[i].strip().startswith(":") and lines[i].startswith(indent + " "):
        options.append(lines[i].strip())
        i += 1
    while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + " ")):
        content.append(lines[i])
        i += 1
    text = "\n".join(content)
    return options, _dedent(text)


def _dedent(text: str) -> str:
    lines = text.splitlines()
    widths = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(widths, default=0)
    return "\n".join(line[cut:] for line in lines).strip("\n") + "\n"


def _blocks(page: Path) -> List[Block]:
    lines = page.read_text().splitlines()
    blocks = []
    for number, line in enumerate(lines):
        match = _DIRECTIVE.match(line)
        if not match or match["name"] not in ("code-block", "code", "sourcecode"):
            continue
        language = match["arg"].strip().lower()
        if language not in _PYTHON:
            continue
        previous = next((lines[j] for j in range(number - 1, -1, -1) if lines[j].strip()), "")
        mark = _MARK.match(previous)
        _, code = _body(lines, number, match["indent"])
        reason = mark["reason"] if mark else None
        blocks.append(Block(page.name, number + 1, language, reason, code))
    return blocks


def _includes(page: Path) -> List[Tuple[int, str, List[str]]]:
    lines = page.read_text().splitlines()
    found = []
    for number, line in enumerate(lines):
        match = _DIRECTIVE.match(line)
        if match and match["name"] == "literalinclude":
            options, _ = _body(lines, number, match["indent"])
            found.append((number + 1, match["arg"].strip(), options))
    return found


def test_python_blocks_are_included_examples_or_marked_fragments() -> None:
    unmarked = [
        f"{block.page}:{block.line}"
        for page in _pages()
        for block in _blocks(page)
        if block.reason is None
    ]
    assert unmarked == [], (
        "Python code blocks must be literalincludes of docs/examples (which this module"
        " runs) or be marked '.. not-runnable: <reason>': " + ", ".join(unmarked)
    )


def test_fragments_parse() -> None:
    flags = ast.PyCF_ONLY_AST | getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)
    for page in _pages():
        for block in _blocks(page):
            if block.language == "pycon":
                continue
            try:
                compile(block.code, f"{block.page}:{block.line}", "exec", flags=flags)
            except SyntaxError as e:
                pytest.fail(f"{block.page}:{block.line} does not parse: {e}")


def test_upstream_fragments_use_upstream_names() -> None:
    flags = ast.PyCF_ONLY_AST | getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)
    seen = 0
    for page in _pages():
        for block in _blocks(page):
            tree = compile(block.code, block.page, "exec", flags=flags)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module == "rubin.nublado.client":
                    seen += 1
                    names = {alias.name for alias in node.names}
                    assert names <= UPSTREAM_NAMES, f"{block.page}:{block.line}: {names}"
                if isinstance(node, ast.ImportFrom) and node.module == "nublado_sync":
                    # Our side of a pair is an included, tested example.
                    pytest.fail(f"{block.page}:{block.line}: nublado_sync code in a fragment")
    assert seen > 0, "the porting guide shows upstream imports"


def test_literalincludes_name_examples() -> None:
    included = set()
    for page in _pages():
        for line, target, options in _includes(page):
            path = (DOCS / target).resolve()
            assert path.parent == EXAMPLES, f"{page.name}:{line}: {target} is not in docs/examples"
            assert path.is_file(), f"{page.name}:{line}: {target} does not exist"
            included.add(path.name)
            text = path.read_text()
            for option in options:
                name, _, value = option[1:].partition(":")
                if name in ("start-after", "end-before", "start-at", "end-at"):
                    assert value.strip() in text, f"{page.name}:{line}: no {value.strip()!r}"
    examples = {path.name for path in EXAMPLES.glob("*.py")}
    assert examples - included == set(), "examples that no page shows"


def test_testing_kit_docstring_example_runs() -> None:
    # The example of nublado_sync.testing's module docstring (shown in the
    # API reference of the kit) needs nothing but itself.
    import nublado_sync.testing

    doc = nublado_sync.testing.__doc__ or ""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == ".. code-block:: python")
    _, code = _body(lines, start, "")
    assert "MockJupyter(" in code
    exec(compile(code, "nublado_sync.testing docstring", "exec"), {})
