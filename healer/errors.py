"""The one exception type for user errors: the CLI prints its message as one line and exits non-zero."""


class HealerError(Exception):
    """A problem with the user's input (a file, a key, an id) that the message explains and says how to fix."""
