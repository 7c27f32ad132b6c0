"""The CLI explains itself and lists every command group."""

from __future__ import annotations

import subprocess
import sys


def test_help_lists_the_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "onepiece", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("world", "serve", "features", "contexts", "trainset"):
        assert command in out, f"'{command}' missing from onepiece --help"
