"""Options and error handling shared by every subcommand."""

from __future__ import annotations

import datetime as dt
import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from onepiece.storage import DATA_ENV

console = Console(stderr=True)

DataOption = Annotated[
    str,
    typer.Option(
        "--data",
        envvar=DATA_ENV,
        help=f"Data root holding the contract's tables (env {DATA_ENV}).",
        show_default=True,
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(func: F) -> F:
    """Turn expected failures (bad input, contract violations) into one line and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from onepiece.contract import ContractError
        from onepiece.errors import UserError

        try:
            return func(*args, **kwargs)
        except (UserError, ContractError) as err:
            console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def parse_utc_time(value: str, option: str) -> dt.datetime:
    """An ISO time from option ``option``; naive times are UTC. Bad input is a UserError."""
    from onepiece.errors import UserError

    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UserError(
            f"invalid {option} {value!r}: expected an ISO time such as 2026-11-04T00:00:00Z"
        ) from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def parse_day(value: str, option: str) -> dt.date:
    """A YYYY-MM-DD day from option ``option``. Bad input is a UserError."""
    from onepiece.errors import UserError

    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"invalid {option} {value!r}: expected YYYY-MM-DD") from None
