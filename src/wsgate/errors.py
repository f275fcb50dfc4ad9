"""The ways a command fails, so the CLI can answer each with one line and its status."""


class UsageError(Exception):
    """The user asked for something wrong (a flag, an argument): exit status 2, and a
    pointer to the command's ``--help``."""


class ConfigError(UsageError):
    """A mistake inside a configuration file: exit status 2. The message names the file and
    the key, which says more than ``--help`` could."""


class Failure(Exception):
    """Something went wrong at run time (refused connection, port in use): exit status 1."""
