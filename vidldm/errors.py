"""Error types for problems a user can fix.

Every error raised for bad user input is a `VidldmError` (a `ValueError`), with a one-line
message that says what was wrong and what to do. The CLI prints that line and exits
non-zero; anything else is a bug and keeps its traceback.
"""


class VidldmError(ValueError):
    """A problem with the user's input, settings or files; the message says how to fix it."""


class CheckpointError(VidldmError):
    """A weights file that is missing, corrupt, unsafe to unpickle, or of an unknown layout."""


class ShapeError(VidldmError):
    """A tensor whose rank, size or channel count does not fit the model."""
