"""The one exception family the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input the user can fix: the message says which file or key, and what to do."""
