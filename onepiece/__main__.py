"""``python -m onepiece`` runs the CLI."""

from onepiece.cli import app

app()
