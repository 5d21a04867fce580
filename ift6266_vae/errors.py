"""The package's exceptions: problems a user can fix get one line, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad input, missing data, bad config).

    The CLI prints ``str(err)`` as a one-line message and exits with status 2;
    the message names the problem and the fix.
    """


class TrainingDiverged(UserError):
    """The loss or the parameters became NaN or infinite; nothing non-finite was saved."""
