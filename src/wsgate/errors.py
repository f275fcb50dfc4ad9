"""The two ways a command fails, so the CLI can answer each with one line and its status."""


class UsageError(Exception):
    """The user asked for something wrong (flag, file, key): exit status 2."""


class Failure(Exception):
    """Something went wrong at run time (refused connection, port in use): exit status 1."""
