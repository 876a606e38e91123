"""The project as a new user meets it: the README's commands are the ones that run."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_block(heading: str) -> str:
    """The first fenced code block under ``## heading`` in the README."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```\w*\n(.*?)```", section, re.S)
    assert found, f"no code block under '## {heading}'"
    return found.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = readme_block("Test it").splitlines()
    assert commands[-1] == "pytest", "the README's test command is plain pytest"
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[-len(commands) :] == commands, (
        ".ci/run must end with the README's test commands, verbatim"
    )


def test_a_worker_imports_no_dev_tooling() -> None:
    """The supervisor, the simulator and the embedded Redis live in wxtasks.dev; nothing a
    worker, beat, the receiver or the exporter loads pulls them in."""
    report = "import sys; print(sorted(m for m in sys.modules if m.startswith('wxtasks.dev')))"
    for imports in (
        "import workers",
        "import workers, wxtasks.worker.beat, wxtasks.worker.consumer",
        "import wxtasks.inbound.receiver, wxtasks.metrics",
    ):
        out = subprocess.run(
            [sys.executable, "-c", f"{imports}; {report}"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        assert out.stdout.strip() == "[]", f"{imports} loaded {out.stdout}"


def test_only_wxtasks_workers_and_beat_schedule_are_installed() -> None:
    dist = distribution("wxtasks")
    assert (dist.read_text("top_level.txt") or "").split() == [
        "beat_schedule",
        "workers",
        "wxtasks",
    ]
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    setuptools = pytest.importorskip("setuptools")
    found = setuptools.find_packages(str(ROOT), include=config["packages"]["find"]["include"])
    tops = {name.split(".")[0] for name in found} | set(config["py-modules"])
    assert tops == {"beat_schedule", "workers", "wxtasks"}
    assert "wxtasks.dev" in found


def test_errors_are_matched_by_class_never_by_name() -> None:
    by_name = re.compile(r"__name__\s*(==|!=|in\b|not in\b)|\.__name__\)?\s*\)?\s*in\s*\(")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "wxtasks").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if by_name.search(line) and "__main__" not in line
    ]
    assert offenders == []


def test_library_code_never_imports_the_cli() -> None:
    importers = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "wxtasks").rglob("*.py")
        if path.parent.name != "cli"
        and path.name != "__main__.py"
        and re.search(r"^\s*(from|import) wxtasks\.cli\b", path.read_text(), re.M)
    ]
    assert importers == []
