"""The flags several commands share, and how a command line is read: run options from their declarations
(:mod:`aekit.training.settings`), model options from the registry (:mod:`aekit.models.config`), and the few flags
(--device, --overwrite, RUN, --dataset) that many commands take with one meaning."""

from __future__ import annotations

import argparse

from aekit.models import FAMILIES
from aekit.models.config import option_defaults
from aekit.training.settings import declared, defaults, kinds


def sizes(text: str) -> tuple[int, ...]:
    """Comma-separated whole numbers of at least 0 (a blind noise range starts at 0: red's --sigma 0,55); what each
    option allows beyond that, its config checks (--hidden at least 1, --factors at least 2)."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 256,128") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be a whole number of at least 0")
    return values


def numbers(text: str) -> tuple[float, ...]:
    """Comma-separated numbers, e.g. 0.002,0.006,0.015; what their values may be, the command's checks."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers, e.g. 0.002,0.01"
        ) from None


def _classes(text: str) -> tuple[str, ...]:
    """Classes as written: names or label numbers, which the data tells apart (aekit.data.dataset.class_numbers)."""
    classes = tuple(part.strip() for part in text.split(","))
    if not all(classes) or len(set(classes)) != len(classes):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of distinct classes (label numbers or names), e.g. 3,5 or cats"
        )
    return classes


def names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


# How an option of each type is read from the command line; a run option's list is one of classes, a model option's
# one of sizes.
_READERS = {
    int: {"type": int},
    float: {"type": float},
    str: {},
    tuple: {"type": sizes},
    bool: {"action": "store_true"},
}
_RUN_READERS = {**_READERS, tuple: {"type": _classes}}


def _flag(
    parser, f, readers: dict, kind: type, help: str | None = None, defaulted: bool = False, shown: bool = True
) -> None:
    """The flag of the option declared by ``f`` (a model config's field or a run option, :mod:`aekit.training.settings`)
    whose absence means 'not given' (None), so a resumed run can tell what the user asked to change, or with
    ``defaulted`` the option's default; ``shown``: its help says the default. A switch that is on by default is
    turned off by --no-NAME."""
    dashed, help = f.name.replace("_", "-"), help or f.metadata["help"]
    if kind is bool and f.default is True:
        parser.add_argument(f"--no-{dashed}", dest=f.name, action="store_false", default=None, help=help)
        return
    arguments = dict(readers[kind])
    if f.metadata["choices"]:
        arguments["choices"] = f.metadata["choices"]
    if f.metadata.get("metavar"):
        arguments["metavar"] = f.metadata["metavar"]
    if shown:
        help += f" (default: {','.join(map(str, f.default)) if isinstance(f.default, tuple) else f.default})"
    parser.add_argument(f"--{dashed}", dest=f.name, default=f.default if defaulted else None, help=help, **arguments)


def run_options(parser, groups: tuple[str, ...], helps: dict[str, str] | None = None) -> None:
    """The run options of ``groups`` (:mod:`aekit.training.settings`); ``helps``: help texts of this command's own."""
    types = kinds()
    for f in declared():
        if f.metadata["group"] in groups:
            _flag(parser, f, _RUN_READERS, types[f.name], (helps or {}).get(f.name))


def run_option(parser, name: str, defaulted: bool = False, shown: bool = True, help: str | None = None) -> None:
    """The flag of the run option ``name`` alone, e.g. --data-dir for a command that reads a run's data (see
    :func:`_flag` for ``defaulted``, ``shown`` and ``help``, this command's own)."""
    f = next(f for f in declared() if f.name == name)
    _flag(parser, f, _RUN_READERS, kinds()[name], help, defaulted=defaulted, shown=shown)


def model_options(parser, skip: tuple[str, ...] = ()) -> None:
    """The model families' options (:mod:`aekit.models.config`), each once, but those in ``skip``."""
    for name in _owners():
        if name not in skip:
            model_option(parser, name)


def model_option(parser, name: str) -> None:
    """The flag of the model option ``name`` alone (e.g. into a group of exclusive flags), named by the families
    that have it where not every family with networks does."""
    having = _owners()[name]
    config, f = having[0]
    prefix = "" if len(having) > 1 else f"{config.family}: "
    _flag(parser, f, _READERS, config.types()[name], prefix + f.metadata["help"])


def _owners() -> dict[str, list]:
    """Each model option's name and the (config, field) of every family that has it, in registry order."""
    owners: dict[str, list] = {}
    for config in FAMILIES.values():
        for f in config.options():
            owners.setdefault(f.name, []).append((config, f))
    return owners


def model_family(parser) -> None:
    default = option_defaults()["model"]
    parser.add_argument("--model", choices=tuple(FAMILIES), help=f"the model family (default: {default})")


def given(args: argparse.Namespace) -> dict:
    """The run options (see :func:`aekit.training.settings.defaults`) the command line gave."""
    known = defaults()
    return {k: v for k, v in vars(args).items() if k in known and v is not None}


def device(parser, default: str = "cpu") -> None:
    shown = (
        "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"
        if default == "auto"
        else ("cpu (default), auto, cuda, cuda:N or mps")
    )
    parser.add_argument("--device", default=default, help=shown)


def overwrite(parser) -> None:
    """The one way to let a command replace an output that exists (every command that writes a file or folder other
    than a new run or store, which it always refuses to write over)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what --out names where it exists (score: the CSV and the histogram beside it), a file by a "
        "file and a folder by a folder, still whole or not at all; without it an existing output is refused. The "
        "command's own input, run and data are never written over",
    )


def run_argument(parser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run folder written by `aekit train`")


def new_place(parser) -> None:
    parser.add_argument(
        "--dataset",
        metavar="PATH",
        help="where the run's data now lies, if it moved: it must be the data the run was trained on, and the run "
        "records the new place",
    )
