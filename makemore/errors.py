"""Exceptions whose messages are meant for the user; the CLI prints them as one-line errors."""

import signal


class MakemoreError(Exception):
    """Base class: anything the user can fix (bad data, bad checkpoint, bad request)."""


class DataError(MakemoreError):
    """The data file cannot be used."""


class CheckpointError(MakemoreError):
    """A checkpoint is missing, damaged, or does not fit the request."""


class VocabularyError(MakemoreError):
    """Text contains characters the model never saw."""


class TrainingError(MakemoreError):
    """Training cannot go on (for example the loss became NaN)."""


class OptionError(MakemoreError):
    """An option that does not fit the request or can never be met (the CLI shows it as a usage error)."""


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM, after saving its state unless it had not taken a step yet (not an
    error: the CLI says how to resume)."""

    def __init__(self, signum: int, saved: bool = True):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.saved = signum, saved


def printable(text) -> str:
    """text as it may reach a terminal: control characters (a newline would forge a line of output, an escape
    sequence restyle the terminal) and what is not valid Unicode written as escapes, everything else as is."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 in a file name (Python's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")
