"""The one exception type for mistakes a user can fix.

The command line prints its message as a single line and exits with status 2; every
message names the problem and the fix. Programming errors stay ordinary exceptions.
"""


class ContrastiveError(Exception):
    """A user-facing error: bad input, a missing file, an incompatible checkpoint."""
