"""aekit: auto-encoders that work, are fast, and tell the truth about how good they are."""
__version__ = "0.1.0"

from aekit import models  # noqa: E402
from aekit.data import Dataset, load_dataset  # noqa: E402
from aekit.errors import AekitError, DataError, RunError, TrainingDiverged  # noqa: E402
from aekit.evaluate import evaluate  # noqa: E402
from aekit.runs import load  # noqa: E402
from aekit.trainer import TrainSettings, train  # noqa: E402

__all__ = ["models", "Dataset", "load_dataset", "AekitError", "DataError", "RunError", "TrainingDiverged",
           "evaluate", "load", "TrainSettings", "train", "__version__"]
