"""Errors a user can cause: the CLI prints one line and exits non-zero, never a traceback."""


class UserError(Exception):
    """A bad file, flag, field or request. The message names it and says what is wrong."""

    exit_code = 2
