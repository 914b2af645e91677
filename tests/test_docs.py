"""The code in the documentation runs as written.

Every fenced ``python`` and ``sh`` block of README.md, packages/*/README.md
and examples/**/README.md is collected and run, unless an HTML comment on
the line before it says otherwise:

``<!-- docs: skip REASON -->``
    not run: it installs packages, starts a server that runs until stopped,
    or runs this test suite (the reason says which, and what checks it instead).
``<!-- docs: partial REASON -->``
    a fragment that uses names defined elsewhere: Python is compiled (top-level
    ``await`` allowed), not run.
``<!-- docs: needs redis postgres nats -->``
    runs against the test servers (conftest.py); the loopback URLs of the
    block are replaced by the test servers' URLs when those differ.

`examples/hello.py` runs the commands of its docstring, and the chat
demo's requirements.txt names what the test environment installs for it.

Python blocks run in a fresh interpreter; shell blocks line by line, each
line in bash, as a reader would type them, from the repository root. A
``channels subscribe`` line runs until Ctrl-C (its documented way out): once
it says it has subscribed it gets SIGINT and must exit 0. Every other
command must exit 0 within `DEADLINE` seconds.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    [ROOT / "README.md", *ROOT.glob("packages/*/README.md"), *ROOT.glob("examples/**/README.md")]
)
LANGUAGES = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh"}
DEADLINE = 60.0

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[\w+-]*)\s*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs:\s*(?P<kind>\S+)\s*(?P<argument>.*?)\s*-->\s*$")
_DEFAULT_URLS = {
    "redis": re.compile(r"redis://127\.0\.0\.1:6379/0"),
    "postgres": re.compile(r"postgresql://postgres@127\.0\.0\.1(:5432)?/test"),
    "nats": re.compile(r"nats://127\.0\.0\.1:4222"),
}


HATCH = tomllib.loads((ROOT / "hatch.toml").read_text(encoding="utf-8"))


@dataclass(frozen=True, slots=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str  # "python" or "sh"
    code: str
    kind: str = "run"  # "run", "skip", "partial" or "needs"
    argument: str = ""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def collect(path: Path) -> list[Block]:
    """The python and shell blocks of one Markdown file, with their directives."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    number = 0
    while number < len(lines):
        opening = _FENCE.match(lines[number])
        if opening is None:
            number += 1
            continue
        indent = len(opening["indent"])
        end = next(
            (n for n in range(number + 1, len(lines)) if lines[n].strip() == "```"), len(lines)
        )
        language = LANGUAGES.get(opening["language"].lower())
        if language is not None:
            code = "\n".join(line[indent:] for line in lines[number + 1 : end]) + "\n"
            before = next((lines[n] for n in range(number - 1, -1, -1) if lines[n].strip()), "")
            directive = _DIRECTIVE.match(before)
            kind, argument = directive.group("kind", "argument") if directive else ("run", "")
            blocks.append(Block(path, number + 1, language, code, kind, argument))
        number = end + 1
    return blocks


BLOCKS = [block for path in DOCUMENTS for block in collect(path)]


def blocks(language: str, *kinds: str) -> list[pytest.ParameterSet]:
    return [
        pytest.param(block, id=block.where)
        for block in BLOCKS
        if block.language == language and block.kind in kinds
    ]


def test_every_directive_is_known_and_says_why() -> None:
    assert len(BLOCKS) >= 20, [block.where for block in BLOCKS]
    for block in BLOCKS:
        assert block.kind in ("run", "skip", "partial", "needs"), block.where
        if block.kind != "run":
            assert block.argument, f"{block.where}: a {block.kind!r} directive says why"
        if block.kind == "partial":
            assert block.language == "python", f"{block.where}: only Python can be partial"
        if block.kind == "needs":
            assert set(block.argument.split()) <= set(_DEFAULT_URLS), block.where


@pytest.fixture
def servers(request: pytest.FixtureRequest) -> dict[str, str]:
    """The test server URL of each server the block needs."""
    block: Block = request.node.callspec.params["block"]
    needed = block.argument.split() if block.kind == "needs" else []
    return {name: str(request.getfixturevalue(f"{name}_url")) for name in needed}


def as_written(block: Block, servers: dict[str, str]) -> str:
    code = block.code
    for name, url in servers.items():
        code = _DEFAULT_URLS[name].sub(url, code)
    return code


def environment() -> dict[str, str]:
    """This interpreter's scripts (``channels``, ``python``) first on PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHONUNBUFFERED": "1"}


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter from the repository root, as a reader would."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


@pytest.mark.parametrize("block", blocks("python", "run", "needs"))
def test_python_block_runs(block: Block, servers: dict[str, str]) -> None:
    result = run_python(as_written(block, servers))
    assert result.returncode == 0, f"{block.where}:\n{result.stderr}"


@pytest.mark.parametrize("block", blocks("python", "partial"))
def test_partial_python_block_compiles(block: Block) -> None:
    compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def commands(code: str) -> list[str]:
    """The command lines of a shell block (comments and blank lines dropped)."""
    lines = []
    for line in code.splitlines():
        command = line.split(" # ", 1)[0].strip()
        if command and not command.startswith("#"):
            lines.append(command)
    return lines


@pytest.mark.parametrize("block", blocks("sh", "run", "needs"))
def test_shell_block_runs(block: Block, servers: dict[str, str]) -> None:
    for command in commands(as_written(block, servers)):
        run_command(block, command)


def run_command(block: Block, command: str) -> None:
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, for SIGINT as from a terminal
    )
    try:
        if command.startswith("channels subscribe "):
            wait_for_subscribed(process, f"{block.where}: {command}")
            os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=DEADLINE)
    finally:
        # The whole group, also after bash exited: a command it started in the
        # background (`... &`) must not outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, f"{block.where}: {command}\n{stderr}"


def wait_for_subscribed(process: subprocess.Popen[str], what: str) -> None:
    """Read stderr until the readiness line; fail at EOF or after `DEADLINE` seconds."""
    assert process.stderr is not None
    deadline = time.monotonic() + DEADLINE
    seen: list[str] = []
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([process.stderr], [], [], remaining)
        line = process.stderr.readline() if readable else ""
        if "subscribed to" in line:
            return
        if not line:
            break
        seen.append(line)
    pytest.fail(f"{what}: no readiness line; stderr: {''.join(seen)!r}")


def test_hello_runs_as_its_docstring_says(redis_url: str, postgres_url: str) -> None:
    hello = ROOT / "examples" / "hello.py"
    docstring = ast.get_docstring(ast.parse(hello.read_text(encoding="utf-8"))) or ""
    scripts = HATCH["envs"]["default"]["scripts"]
    lines = [command for command in commands(docstring) if command.startswith(("hatch", "python"))]
    assert len(lines) >= 3, docstring
    for line in lines:
        if line.startswith("hatch run "):
            name, _, arguments = line.removeprefix("hatch run ").partition(" ")
            assert scripts.get(name, "").startswith("python examples/hello.py"), line
            line = scripts[name].replace("{args}", arguments)
        code = Block(hello, 1, "sh", line, "needs", "redis postgres")
        command = as_written(code, {"redis": redis_url, "postgres": postgres_url}).strip()
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env=environment(),
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        assert result.returncode == 0, f"{line}\n{result.stderr}"
        assert "done: every subscription ended" in result.stdout


def test_the_chat_demo_requirements_are_what_the_test_environment_installs() -> None:
    listed = (ROOT / "examples" / "chat" / "requirements.txt").read_text(encoding="utf-8")
    requirements = [line for line in listed.splitlines() if line and not line.startswith("#")]
    assert {"starlette", "uvicorn", "websockets"} <= {re.split("[<>=]", r)[0] for r in requirements}
    assert set(requirements) <= set(HATCH["envs"]["default"]["dependencies"])


def test_the_prometheus_scrape_shown_is_what_the_example_prints() -> None:
    """The root README's metrics example prints the scrape shown after it (scope labels aside)."""
    readme = ROOT / "README.md"
    (example,) = [block for block in collect(readme) if "generate_latest()" in block.code]
    lines = readme.read_text(encoding="utf-8").splitlines()
    start = lines.index("```text", example.line)  # the block after the example
    shown = lines[start + 1 : lines.index("```", start)]
    result = run_python(example.code)
    assert result.returncode == 0, f"{example.where}:\n{result.stderr}"
    scope = re.compile(r',?otel_scope_\w+="[^"]*"')
    printed = [
        scope.sub("", line).replace("{,", "{")
        for line in result.stdout.splitlines()
        if line.startswith("channels_")
    ]
    assert printed == shown
