"""The options of a run beside the model families' own, each declared once.

An option is a field made with :func:`option` on one of three frozen dataclasses, by what it sets:
:class:`LossSettings` (the loss and the standardization), :class:`DataSettings` (the data, and the classes to train
on) and :class:`TrainSettings` (what the trainer takes). Its declaration carries its help text, type, default,
choices and bounds, its group of flags, whether a resume may change it and the scikit-learn estimators' name for it.
From the declarations follow the command line's flags (:mod:`aekit.cli.flags`), config.json's options section and its
defaults (:func:`defaults`), the estimators' parameters (:mod:`aekit.sklearn`), the checks of a value (each
settings class checks its fields when it is made) and the rules of a resume (:func:`resumed`). The model families'
options are declared the same way, in their configs (:mod:`aekit.models.config`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields

from aekit.data import DATASET_NAMES
from aekit.errors import AekitError
from aekit.models import model_config  # importing the package registers the families
from aekit.models.config import FAMILIES, family, option_defaults
from aekit.models.likelihood import LOSS_TO_LIKELIHOOD
from aekit.naming import option as named

# The groups of options: the command line shows each under its heading, and ``aekit compare`` takes all but HOW.
DATA, LOSS, TRAINING, HOW = "data", "loss", "training", "how to train"
# The kinds of scikit-learn estimators (:mod:`aekit.sklearn`), by the data they take: rows (the auto-encoders) and
# images of any sizes (the photo restorer); each takes the run options declared for its kind.
ROWS, IMAGES = "rows", "images"
# What a resume may do with an option: it must stay as the run was trained (KEPT), it may change because it changes
# how rather than what is trained (MAY_CHANGE), or it may name where the run's data now lies (MOVED; the data there
# must be the data the run was trained on).
KEPT, MAY_CHANGE, MOVED = "kept", "may change", "moved"


def option(
    default,
    help: str,
    *,
    group: str,
    choices: tuple = (),
    minimum: int | None = None,
    positive: bool = False,
    resume: str = KEPT,
    sklearn: str | None = None,
    sklearn_default=MISSING,
    sklearn_for: tuple[str, ...] = (ROWS, IMAGES),
    before=MISSING,
    metavar: str | None = None,
):
    """A run option: ``help`` is its help text, ``group`` its group of flags, ``choices`` its allowed values,
    ``minimum`` the least whole number and ``positive`` a finite number > 0 it takes, ``resume`` what a resume may
    do with it (KEPT, MAY_CHANGE or MOVED). ``sklearn`` names the estimators' parameter that sets it, where they take
    it (with ``sklearn_default`` where theirs differs), ``sklearn_for`` the kinds of estimators that take it (ROWS,
    IMAGES); ``before`` is what runs made before the option existed were
    trained with, where that differs from ``default``; ``metavar`` how the flag's help names its value."""
    metadata = {
        "help": help,
        "group": group,
        "choices": tuple(choices),
        "minimum": minimum,
        "positive": positive,
        "resume": resume,
        "sklearn": sklearn,
        "sklearn_default": default if sklearn_default is MISSING else sklearn_default,
        "sklearn_for": tuple(sklearn_for),
        "before": before,
        "metavar": metavar,
    }
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class _Settings:
    """What the settings classes share: each field is checked against its declaration when the settings are made."""

    def __post_init__(self):
        problems = self.problems()
        if problems:
            raise AekitError("; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with the fields, each in words that name the fix; a class adds its own to these."""
        problems = []
        for f in fields(self):
            value, rules = getattr(self, f.name), f.metadata
            if rules["choices"] and value not in rules["choices"]:
                problems.append(f"unknown {named(f.name) or f.name} {value!r}; use {_either(rules['choices'])}")
            elif rules["minimum"] is not None and value is not None and not value >= rules["minimum"]:  # NaN too
                problems.append(f"{named(f.name, value)} must be at least {rules['minimum']}")
            elif rules["positive"] and not (value > 0 and math.isfinite(value)):
                problems.append(f"{named(f.name, value)} must be a positive number, e.g. {f.default:g}")
        return problems

    def to_dict(self) -> dict:
        return asdict(self)


def _either(choices: tuple) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}"


@dataclass(frozen=True)
class LossSettings(_Settings):
    """The reconstruction loss, and whether real values are standardized per feature inside the model (by the
    training split's mean and standard deviation; :mod:`aekit.models.standardize`)."""

    loss: str = option(
        "auto",
        "reconstruction loss: auto (bce for binary-valued data, mse for real-valued), bce or mse",
        group=LOSS,
        choices=("auto", *LOSS_TO_LIKELIHOOD),
        sklearn="loss",
        sklearn_for=(ROWS,),
    )
    standardize: bool = option(
        True,
        "train on real values as they are; by default each feature of real-valued data (the squared-error loss) is "
        "standardized by its training-split mean and standard deviation inside the model, and results are given "
        "back in the data's own units",
        group=LOSS,
        sklearn="standardize",
        sklearn_for=(ROWS,),
        before=False,
    )


@dataclass(frozen=True)
class DataSettings(_Settings):
    """The data a run trains on (the readers, :func:`aekit.data.load_dataset`, check it). ``normal_class``: train on
    the training split's examples of these classes only (label numbers, or names the data numbers), as the model of
    normal data whose anomaly scores (:mod:`aekit.anomaly`) the test split's other classes measure."""

    dataset: str = option(
        "digits",
        f"one of {', '.join(DATASET_NAMES)}, a .npy/.npz/.csv file (one example per row), a folder of PNG/JPEG "
        "images, or a store made by `aekit pack` (it keeps the split it was packed with)",
        group=DATA,
        resume=MOVED,
    )
    data_dir: str | None = option(
        None, "for mnist: a folder holding the four IDX files instead of downloading them", group=DATA, resume=MOVED
    )
    test_fraction: float = option(
        0.2, "share of examples held out as the test split where the source has none", group=DATA
    )
    normal_class: tuple[int | str, ...] | None = option(
        None,
        "train on the training examples of these classes of a labelled source only (comma-separated label numbers, "
        "or names: a folder's subfolders, a store's label names), as a model of normal data; the test split keeps "
        "every class, and the report shows how well the anomaly scores tell the others apart (AUROC, ROC curve)",
        group=DATA,
        metavar="K[,K...]",
    )
    label_column: str | None = option(
        None,
        "for a CSV file: the header's name of its column of anomaly labels, 1 for an anomaly and 0 for a normal row; "
        "the column is not trained on, the labels are not used to fit, and the report and `aekit score` measure the "
        "anomaly scores against them (AUROC, AUPRC). An .npz file gives such labels as y beside X",
        group=DATA,
        metavar="NAME",
    )
    patch: int | None = option(
        None,
        "train on random P x P crops (flipped and turned by quarter turns) of a folder or a store of images of any "
        "sizes, each at least P pixels each way; the test split and the evaluation take each test photo's centre crop",
        group=DATA,
        minimum=1,
        sklearn="patch_size",
        sklearn_default=40,
        sklearn_for=(IMAGES,),
        metavar="P",
    )

    def problems(self) -> list[str]:
        try:
            normal_classes(self.normal_class)
        except AekitError as error:
            return [*super().problems(), str(error)]
        return super().problems()


@dataclass(frozen=True)
class TrainSettings(_Settings):
    """``batch_size`` is the global batch: under torchrun each of N ranks takes batch_size / N of it.
    ``compile`` runs each training step through torch.compile (on CUDA in "reduce-overhead" mode, i.e. CUDA graphs);
    ``cuda_graph`` captures it by hand as CUDA graphs instead (aekit.training.graphed; CUDA only, one process); both
    together capture torch.compile's generated kernels by hand, without its own graphs' bookkeeping on every call;
    ``precision="bf16"`` computes the losses under bfloat16 autocast (weights and optimizer stay float32).
    ``on_nan="stop"`` ends the run when the loss turns NaN or infinite (read once per ``log_every`` steps);
    ``"skip"`` checks every step (one device synchronisation each) and skips the update of a non-finite loss.
    ``data_on`` says where the data lives while training (:mod:`aekit.training.batches`): "device" (both splits copied
    there, each batch gathered inside the step), "stream" (batches gathered from the dataset's arrays, e.g. a memory
    map, by a background thread) or "auto" (the device where both splits fit in half of its free memory); data of
    photos for patch training (``dataset.photos``) is always cropped by a background thread, ``patches_per_epoch``
    crops an epoch."""

    epochs: int = option(
        20,
        "passes over the training split",
        group=TRAINING,
        minimum=1,
        resume=MAY_CHANGE,
        sklearn="max_iter",
        sklearn_default=100,
    )
    batch_size: int = option(
        128,
        "examples per step; under torchrun the global batch, split over the processes",
        group=TRAINING,
        minimum=1,
        sklearn="batch_size",
    )
    lr: float = option(1e-3, "Adam learning rate", group=TRAINING, positive=True, sklearn="learning_rate")
    schedule: str = option(
        "constant",
        "learning-rate schedule",
        group=TRAINING,
        choices=("constant", "cosine"),
        sklearn="schedule",
        sklearn_for=(IMAGES,),
    )
    warmup_steps: int = option(
        0,
        "steps over which the learning rate rises in a straight line from --lr / N to --lr before it follows "
        "--schedule (0: none)",
        group=TRAINING,
        minimum=0,
        metavar="N",
    )
    clip_grad_norm: float = option(
        0.0,
        "the most L2 norm of a step's gradient (over the parameters the step updates); a larger one is scaled down to "
        "it, so that one batch that blows the loss up moves Adam's averages no more than any other (0: no clipping)",
        group=TRAINING,
        minimum=0,
        metavar="MAX",
    )
    seed: int = option(
        0,
        "seeds the weights, the data order and the train/test split (a store keeps the split it was packed with)",
        group=TRAINING,
        sklearn="random_state",
        sklearn_default=None,
    )
    log_every: int = option(50, "steps between reads of the running loss", group=HOW, minimum=1, resume=MAY_CHANGE)
    compile: bool = option(
        False,
        "run each training step through torch.compile (CUDA graphs on a GPU); pays a compile time up front",
        group=HOW,
        resume=MAY_CHANGE,
    )
    cuda_graph: bool = option(
        False,
        "capture each training step by hand as a CUDA graph (one process on a GPU; the alternative to --compile, no "
        "compile time)",
        group=HOW,
        resume=MAY_CHANGE,
    )
    precision: str = option(
        "fp32",
        "fp32, or bf16 autocast for the forward and backward passes",
        group=HOW,
        choices=("fp32", "bf16"),
        resume=MAY_CHANGE,
    )
    on_nan: str = option(
        "stop",
        "when the loss turns NaN or infinite: stop (keeping the last good checkpoint) or skip that update and count "
        "it (checks every step)",
        group=HOW,
        choices=("stop", "skip"),
        resume=MAY_CHANGE,
    )
    patches_per_epoch: int = option(
        12800,
        "with --patch: the random crops an epoch draws from the training photos (the default: 100 steps of 128)",
        group=TRAINING,
        minimum=1,
        sklearn="patches_per_epoch",
        sklearn_for=(IMAGES,),
        metavar="N",
    )
    data_on: str = option(
        "auto",
        "where the data lives while training: device (both splits copied there, the fast path), stream (batches read "
        "from the data's arrays, e.g. a memory-mapped store, by a background thread: data of any size) or auto "
        "(device where both splits fit in half of its free memory); may change on --resume",
        group=HOW,
        choices=("auto", "device", "stream"),
        resume=MAY_CHANGE,
    )

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.cuda_graph and self.on_nan == "skip":
            problems.append("--on-nan skip checks each step on the host, which a CUDA graph cannot; use --on-nan stop")
        return problems


# The ways of capturing the step exclude each other on a resume: naming one there replaces the saved one.
CAPTURES = ("compile", "cuda_graph")


def _declaring() -> tuple[type[_Settings], ...]:
    """The settings classes, in the order config.json's options section lists their options (looked up at each call,
    so that a test may declare an option on a class of its own in place of one)."""
    return LossSettings, DataSettings, TrainSettings


def declared() -> list[dataclasses.Field]:
    """Every run option's declaration, in the order config.json's options section lists them."""
    return [f for settings in _declaring() for f in fields(settings)]


def defaults() -> dict:
    """Every option of a run and its default: the model families' options (:mod:`aekit.models.config`; ``model``
    names the family) and the run options declared here."""
    return {**option_defaults(), **{f.name: f.default for f in declared()}}


def older_run_defaults() -> dict:
    """What runs made before an option existed were trained with, where that differs from its default now."""
    return {f.name: f.metadata["before"] for f in declared() if f.metadata["before"] is not MISSING}


def kinds() -> dict[str, type]:
    """Each run option's type: int, float, str, bool or tuple (of classes); the ones that may be None too."""
    hints = _hints(_declaring())
    return {f.name: _kind(hints[f.name]) for f in declared()}


@functools.cache
def _hints(settings: tuple[type, ...]) -> dict:
    return {name: hint for cls in settings for name, hint in typing.get_type_hints(cls).items()}


def _kind(hint) -> type:
    for candidate in (hint, *typing.get_args(hint)):
        origin = typing.get_origin(candidate) or candidate
        if origin in (bool, int, float, str, tuple):
            return origin
    raise TypeError(f"run options are bool, int, float, str or tuple, not {hint}")


def checked(options: dict) -> None:
    """Refuse, in one line naming each, the values of resolved ``options`` that their declarations do not allow."""
    problems = []
    for settings in _declaring():
        try:
            settings(**{f.name: options[f.name] for f in fields(settings)})
        except AekitError as error:
            problems.append(str(error))
    if problems:
        raise AekitError("; ".join(problems))


def train_settings(options: dict) -> TrainSettings:
    """The trainer's settings of ``options`` (those it names; the others take their defaults)."""
    return TrainSettings(**{f.name: options[f.name] for f in fields(TrainSettings) if f.name in options})


def normal_classes(value) -> tuple[int | str, ...] | None:
    """The ``normal_class`` option as a tuple of distinct classes (a class, or a list of them; None: every class):
    label numbers (any integer type, as ints), or names (strings) that :func:`aekit.data.dataset.class_numbers`
    numbers on the data."""
    if value is None:
        return None
    labels = [value] if isinstance(value, (numbers.Integral, str)) else value
    if (
        not isinstance(labels, (list, tuple))
        or not labels
        or not all(_is_class(label) for label in labels)
        or len(set(labels)) != len(labels)
    ):
        raise AekitError(
            f"--normal-class {value!r} must be distinct classes, label numbers >= 0 or names: e.g. 3 or 3,5 or cats"
        )
    return tuple(label if isinstance(label, str) else int(label) for label in labels)


def _is_class(label) -> bool:
    if isinstance(label, str):
        return label != ""
    return isinstance(label, numbers.Integral) and not isinstance(label, bool) and label >= 0


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


def _on_resume(name: str) -> str:
    """What a resume may do with option ``name`` (a model option must stay as it was)."""
    return next((f.metadata["resume"] for f in declared() if f.name == name), KEPT)


def changed_on_resume(saved: dict, given: dict) -> list[str]:
    """The options ``given`` to resume a run whose options were ``saved`` that differ from the saved ones where a
    resume must keep them."""
    return sorted(k for k, v in given.items() if _on_resume(k) == KEPT and as_saved(v) != as_saved(saved[k]))


def resumed(saved: dict, given: dict) -> dict:
    """The options of a run resumed with the options ``given`` (those :func:`changed_on_resume` finds aside): the
    ``saved`` ones, with the given ones that a resume may change or that name where its data now lies."""
    options = dict(saved)
    if given.keys() & set(CAPTURES):
        options.update(dict.fromkeys(CAPTURES, False))
    return {**options, **{k: v for k, v in given.items() if _on_resume(k) != KEPT}}


# How config.json holds a value of each kind, in words, and the test that it does.
_SAVED = {
    tuple: ("list of sizes", lambda v: isinstance(v, list) and bool(v) and all(type(x) is int for x in v)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    float: ("number", lambda v: type(v) in (int, float)),
    int: ("whole number", lambda v: type(v) is int),
    str: ("name", lambda v: isinstance(v, str)),
}


def mistyped(options: dict) -> list[str]:
    """Each saved option (config.json's options section) whose value is not of its kind, as "name 'value' (not a
    KIND)". A run option's list is of class labels, a model option's of sizes; a string that may be None a path."""
    known, run_kinds = defaults(), kinds()
    types = {name: kind for config in FAMILIES.values() for name, kind in config.types().items()}
    types.update(model=str, **run_kinds)
    wrong = []
    for name, value in options.items():
        default = known[name]
        if value is None and default is None:
            continue
        word, fits = _SAVED[types[name]]
        if types[name] is tuple and name in run_kinds:
            word = "list of labels"
        elif types[name] is str and default is None:
            word = "path"
        if not fits(value):
            wrong.append(f"{name} {value!r:.40} (not a {word})")
    return wrong


def as_saved(value):
    """An option's value as config.json holds it (a tuple as a list)."""
    return list(value) if isinstance(value, tuple) else value


def estimator_parameters(kind: str) -> dict[str, dataclasses.Field]:
    """The run options that the scikit-learn estimators of ``kind`` (ROWS or IMAGES) take, by their parameters' names
    (their default there is ``metadata["sklearn_default"]``)."""
    return {f.metadata["sklearn"]: f for f in declared() if f.metadata["sklearn"] and kind in f.metadata["sklearn_for"]}
