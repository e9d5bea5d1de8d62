"""Errors a user can cause: the CLI prints one line and exits non-zero, never a traceback."""


class UserError(Exception):
    """A bad file, flag, field or request. The message names it and says what is wrong."""

    exit_code = 2


def user_error_in(group: BaseExceptionGroup) -> UserError | None:  # type: ignore[type-arg]
    """The UserError a task group raised, when every exception in it (nested groups included) is
    one: trio wraps an error raised in a nursery's task, and the user still gets one line."""
    errors, rest = group.split(UserError)
    if errors is None or rest is not None:
        return None
    first: BaseException = errors
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first if isinstance(first, UserError) else None
