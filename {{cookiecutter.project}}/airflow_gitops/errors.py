"""Errors the CLI turns into one line on stderr and a distinct exit code."""


class ToolkitError(Exception):
    """A failure the user can act on; the message names what failed and what to do next."""

    exit_code = 1


class UsageError(ToolkitError):
    """Bad command line or configuration that stops a command before it starts."""

    exit_code = 2
