"""The CLI explains itself and lists every command group."""

from __future__ import annotations

import re
import subprocess
import sys

EXPECTED = ("world", "features", "contexts", "trainset", "train", "evaluate", "ablation",
            "ml100k", "export", "serve", "score", "outcomes", "calibrate", "pin", "index", "retrieve")


def test_help_lists_every_command_with_an_explanation() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "onepiece", "--help"], capture_output=True, text=True, check=True,
        env={"COLUMNS": "200", "PATH": ""},
    ).stdout
    # typer's rich help lists commands as "│ name   explanation │" rows.
    listed = dict(re.findall(r"│ (\w[\w-]*)\s{2,}(\S.*?)\s*│", out))
    missing = [c for c in EXPECTED if c not in listed]
    assert not missing, f"commands missing from onepiece --help: {missing}\n{out}"
    assert all(len(listed[c]) > 10 for c in EXPECTED), listed
