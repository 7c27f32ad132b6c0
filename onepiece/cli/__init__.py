"""The ``onepiece`` command line: one typer app, one module per command group.

Every command imports its heavy dependencies inside its body, so ``onepiece --help``
stays fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="onepiece",
    help=(
        "Batch pre-rank scoring with the onePiece generative ranking model.\n\n"
        "Generate or read the contract's tables, build context sequences with Beam, "
        "pull side features from Feast, train and evaluate the model, serve it with "
        "Triton and write pre-rank score partitions. Commands that read or write tables "
        "take --data (default: $ONEPIECE_DATA, then ./data)."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

# Each module registers its commands on ``app`` when imported.
from onepiece.cli import world  # noqa: E402,F401
from onepiece.cli import serve  # noqa: E402,F401
from onepiece.cli import features  # noqa: E402,F401
from onepiece.cli import contexts  # noqa: E402,F401
from onepiece.cli import train  # noqa: E402,F401
from onepiece.cli import score  # noqa: E402,F401
from onepiece.cli import evaluation  # noqa: E402,F401
from onepiece.cli import outcomes  # noqa: E402,F401
from onepiece.cli import calibrate  # noqa: E402,F401
from onepiece.cli import pin  # noqa: E402,F401
from onepiece.cli import retrieval  # noqa: E402,F401
