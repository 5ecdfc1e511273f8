"""The options of a run: what ``aekit train`` takes (and config.json's options section keeps), their defaults, and
which of the model families' options a family has. Light to import (no figures, no data readers): the command line
builds its parser from it before it knows which command runs."""

from __future__ import annotations

from dataclasses import fields

from aekit.models import model_config  # importing the package registers the families
from aekit.models.config import family, option_defaults
from aekit.training.trainer import TrainSettings

TRAIN_OPTIONS = {f.name: f.default for f in fields(TrainSettings)}
DATA_OPTIONS = {"dataset": "digits", "data_dir": None, "test_fraction": 0.2}
# One-class training: the classes of a labelled source that the training split keeps (None: all).
ANOMALY_OPTIONS = {"normal_class": None}


def defaults() -> dict:
    """Every option of a run and its default: the model families' options (:mod:`aekit.models.config`; ``model``
    names the family), the loss and standardization, the data's and the training's. standardize: real-valued data
    is standardized per feature inside the model (see aekit.models.standardize). normal_class: train on the
    examples of these classes only (a list of labels), as the model of normal data whose anomaly scores
    (:mod:`aekit.evaluation.anomaly`) the test split's other classes measure."""
    return {
        **option_defaults(),
        "loss": "auto",
        "standardize": True,
        **DATA_OPTIONS,
        **ANOMALY_OPTIONS,
        **TRAIN_OPTIONS,
    }


def for_family(options: dict) -> dict:
    """``options`` without the model options that ``options["model"]``'s family does not have."""
    own = {f.name for f in family(options["model"]).options()}
    others = set(option_defaults()) - own - {"model"}
    return {k: v for k, v in options.items() if k not in others}


def refuse_foreign(given: dict, name: str) -> None:
    """Refuse a model option that family ``name`` does not have, naming the families that do."""
    own = {f.name for f in family(name).options()} | {"model"}
    foreign = {k: v for k, v in given.items() if k in option_defaults() and k not in own}
    if foreign:
        model_config(name, (1,), **foreign)  # raises, in the words of the registry
