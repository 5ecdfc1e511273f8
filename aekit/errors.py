"""The library's own exceptions: a user mistake is one of these, and the CLI turns it into one line and exit 2."""

import signal


class AekitError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class DataError(AekitError, ValueError):
    """A dataset, data file or array that cannot be used as given."""


class RunError(AekitError):
    """A run folder (config, weights, checkpoint) that cannot be used as given."""


class TrainingDiverged(AekitError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class TrainingStopped(Exception):
    """SIGINT or SIGTERM stopped training after a checkpoint was written; ``--resume`` continues from it.

    Not an AekitError: the user asked for it, and the CLI exits with 128 + the signal number as shells expect.
    """

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.signal_number = signal_number


class Interrupted(KeyboardInterrupt):
    """A signal that interrupts a command at once, as Ctrl-C does (SIGTERM; in training, a second SIGINT or
    SIGTERM): what was half written is removed on the way out, and the CLI exits with 128 + the signal number."""

    def __init__(self, signal_number: int):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number
