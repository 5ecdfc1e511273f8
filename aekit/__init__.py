"""aekit: auto-encoders that work, are fast, and tell the truth about how good they are.

The public names are imported on first use (PEP 562), so that the modules that need no torch (``aekit.report.plots``,
``aekit.report.html``, ``aekit.report.projector``, ``aekit.atomic``) load without it.
"""

import importlib

__version__ = "0.1.0"

# Each public name and the module that defines it (None: the name is a subpackage).
_PUBLIC = {
    "models": None,
    "Dataset": "aekit.data",
    "load_dataset": "aekit.data",
    "AekitError": "aekit.errors",
    "DataError": "aekit.errors",
    "RunError": "aekit.errors",
    "TrainingDiverged": "aekit.errors",
    "evaluate": "aekit.evaluation",
    "export": "aekit.uses.export",
    "load": "aekit.training.run_folder",
    "TrainSettings": "aekit.training.settings",
    "train": "aekit.training.trainer",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    where = _PUBLIC[name]
    value = (
        importlib.import_module(f"{__name__}.{name}")
        if where is None
        else getattr(importlib.import_module(where), name)
    )
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
