"""Errors a user can fix: they become one line on stderr and exit code 2, never a traceback."""


class UserError(Exception):
    """Bad config or input; the message names the key or file, the value and what is accepted."""

    exit_code = 2
