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


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (the type's name when it has none): third-party errors
    (diffusers, peft, transformers) often carry whole tracebacks or tables in their text."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
