"""The project as a new user meets it: the README's commands are the ones that run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_block(heading: str) -> str:
    """The first fenced code block under ``## heading`` in the README."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```\w*\n(.*?)```", section, re.S)
    assert found, f"no code block under '## {heading}'"
    return found.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = readme_block("Test it")
    assert "\n" not in command, "the README's test command is one line"
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[-1] == command, ".ci/run must end with the README's test command, verbatim"
