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
    """Training stopped on SIGINT or SIGTERM after saving its state (not an error: the CLI says how to resume)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
