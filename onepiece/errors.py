"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""


class UserError(Exception):
    """Bad input or configuration from the user: an argument, a path, a missing server.

    The message must name the bad thing and where it came from.
    """
