from __future__ import annotations

import subprocess
import sys

import wxtasks


def test_all_is_sorted_and_importable() -> None:
    assert wxtasks.__all__ == sorted(wxtasks.__all__)
    for name in wxtasks.__all__:
        assert hasattr(wxtasks, name), name


def test_importing_starts_and_connects_nothing() -> None:
    code = (
        "import socket, threading\n"
        "socket.socket.connect = lambda *a: (_ for _ in ()).throw(AssertionError('net'))\n"
        "import wxtasks, wxtasks.tasks, workers\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_version_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wxtasks", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and wxtasks.__version__ in out.stdout
