"""What the scikit-learn estimators share: their hyper-parameters made from the declarations of the families' options
(:mod:`aekit.models.config`) and of the run options (:mod:`aekit.training.settings`), the error they raise, messages
in their own words, one training through the trainer that ``aekit train`` runs, and pickles that carry the weights as
numpy arrays.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_scalar

from aekit.data import Dataset
from aekit.errors import AekitError
from aekit.models import ModelConfig, build_model
from aekit.models.base import device_of
from aekit.models.config import family
from aekit.naming import ANY, Words, speaking
from aekit.training.settings import TrainSettings, estimator_parameters, kinds
from aekit.training.trainer import resolve_device, train

# Where the model is trained, an estimator's parameter of every kind.
DEVICE = {"device": "auto"}


class ParameterError(AekitError, ValueError):
    """A hyper-parameter that cannot be used; a ValueError, as scikit-learn's own estimators raise."""


def sklearn_name(f) -> str:
    return f.metadata["sklearn"] or f.name


def whole(value, name: str, minimum: int | None = 1) -> int:
    """A parameter that takes a whole number >= ``minimum`` (any integer type, numpy's too), as a plain int;
    refused as scikit-learn refuses one."""
    check_scalar(value, name, numbers.Integral, min_val=minimum)
    return int(value)


def in_own_words(method):
    """Let the messages made inside ``method`` name options as the estimator's parameters (:meth:`_words`)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with speaking(self._words()):
            return method(self, *args, **kwargs)

    return wrapper


def family_parameters(config: type[ModelConfig], shared: type[ModelConfig]) -> dict:
    """A family's own hyper-parameters (its config's options beyond those of ``shared``, the config class whose
    options the estimators of that kind set themselves or do not take), by their scikit-learn names, with their
    defaults."""
    common = {f.name for f in shared.options()}
    return {sklearn_name(f): f.default for f in config.options() if f.name not in common}


def parameter_doc(config: type[ModelConfig], shared: type[ModelConfig]) -> str:
    """The numpydoc lines of a family's own hyper-parameters (:func:`family_parameters`), from its config's help
    texts."""
    types, own = config.types(), family_parameters(config, shared)
    lines = []
    for f in config.options():
        name = sklearn_name(f)
        if name in own:
            kind = (
                "{" + ", ".join(map(repr, f.metadata["choices"])) + "}"
                if f.metadata["choices"]
                else ("tuple of int" if types[f.name] is tuple else types[f.name].__name__)
            )
            lines += [
                f"    {name} : {kind}, default={f.default!r}",
                f"        {f.metadata['help'][0].upper()}{f.metadata['help'][1:]}.",
            ]
    return "\n".join(lines)


def training_parameters(kind: str) -> dict:
    """The hyper-parameters that set the data and the training of the estimators of ``kind`` (the run options they
    take, :func:`aekit.training.settings.estimator_parameters`, and the device), with their defaults."""
    return {**{name: f.metadata["sklearn_default"] for name, f in estimator_parameters(kind).items()}, **DEVICE}


def init_storing(qualname: str, defaults: dict):
    """An ``__init__`` taking the hyper-parameters in ``defaults`` (the first also by position) that stores each
    value unchanged, as scikit-learn's contract asks. scikit-learn reads the hyper-parameters off ``__init__``'s
    signature, so the generated function carries a real one (help() and clone() see it too)."""
    kinds = [inspect.Parameter.POSITIONAL_OR_KEYWORD] + [inspect.Parameter.KEYWORD_ONLY] * (len(defaults) - 1)
    signature = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, kind, default=value) for (name, value), kind in zip(defaults.items(), kinds)]
    )

    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name in defaults:
            setattr(self, name, bound.arguments[name])

    __init__.__signature__, __init__.__qualname__ = signature, qualname
    return __init__


def own_rng():
    """Fork torch's global RNG (the CPU's and every CUDA device's) so that seeding inside leaves the caller's
    random stream as it was."""
    return torch.random.fork_rng(devices=list(range(torch.cuda.device_count())))


def device_here(trained_on: str) -> torch.device:
    """The device a model was trained on if this machine has it, else the CPU."""
    try:
        return resolve_device(trained_on)
    except AekitError:
        return torch.device("cpu")


def fitted(
    spec: ModelConfig,
    data: Dataset,
    settings: TrainSettings,
    device: torch.device,
    measure: bool = False,
    keep_best: bool = False,
):
    """The model of ``spec`` trained on ``data`` by the trainer ``aekit train`` runs, seeded by ``settings.seed`` on
    a forked RNG (the caller's stream untouched), without a progress bar; and its history. ``measure``: the loss on
    ``data.x_test`` after each epoch (the history's test_loss); ``keep_best`` (with it): the weights of the epoch
    where it was least, else those of the last epoch."""
    best = {"loss": math.inf, "state": None}

    def remember(record: dict) -> None:
        if record["test_loss"] < best["loss"]:
            best.update(loss=record["test_loss"], state=copy.deepcopy(model.state_dict()))

    with own_rng():
        torch.manual_seed(settings.seed)
        model = build_model(spec)
        history = train(
            model,
            data,
            settings,
            device=device,
            progress=False,
            test_each_epoch=measure,
            on_epoch_end=remember if keep_best else None,
        )
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return model, history


class TorchEstimator(BaseEstimator):
    """An estimator of a model family (``_model``, its name in the registry) that takes the run options declared for
    its kind of data (``_data``: ROWS or IMAGES), fitted as ``model_`` of the config ``spec_``."""

    _model = ""
    _data = ""
    _arguments: tuple[str, ...] = ()  # the options its methods take beside the hyper-parameters, named as such

    def _run_options(self, params: dict | None = None) -> dict:
        """The run options that the training hyper-parameters set (``params``, by default the estimator's own), by
        their names as options: whole numbers checked as scikit-learn checks them, and a seed drawn from
        ``random_state``, as scikit-learn's estimators draw theirs."""
        params = self.get_params(deep=False) if params is None else params
        types, values = kinds(), {}
        for parameter, f in estimator_parameters(self._data).items():
            value = params[parameter]
            if parameter == "random_state":
                value = int(check_random_state(value).randint(2**31 - 1))
            elif types[f.name] is int:
                value = whole(value, parameter, f.metadata["minimum"])
            values[f.name] = value
        return values

    def _model_fields(self, config: type[ModelConfig], skip: set[str], params: dict | None = None) -> dict:
        """The config fields that the hyper-parameters set (``params``, by default the estimator's own; those in
        ``skip`` aside), sizes as tuples of plain ints (a single number or a numpy array taken too)."""
        names = {sklearn_name(f): f.name for f in config.options()}
        types, fields = config.types(), {}
        params = self.get_params(deep=False) if params is None else params
        for name, value in params.items():
            if name in skip:
                continue
            if types[names[name]] is tuple:
                value = tuple(whole(size, name) for size in np.atleast_1d(value).tolist())
            fields[names[name]] = value
        return fields

    def _words(self) -> Words:
        """The estimator's words for the options that messages name (see :mod:`aekit.naming`): its parameters, e.g.
        ``n_components=3`` for a code size of 3, and the arguments of its methods; None for an option it does not
        have."""
        training = {f.name: name for name, f in estimator_parameters(self._data).items()}
        names = {**training, **{f.name: sklearn_name(f) for f in family(self._model).options()}}
        parameters = {*self._get_param_names(), *self._arguments}

        def words(name: str, value=ANY) -> str | None:
            parameter = names.get(name, name)
            if parameter not in parameters:
                return None
            return parameter if value is ANY else f"{parameter}={value!r}"

        return words

    def __getstate__(self):
        state = dict(super().__getstate__())
        if "model_" in state:
            # Numpy arrays on the CPU, not torch tensors: the pickle carries no device and loads on any machine.
            state["model_"] = (
                str(device_of(self.model_)),
                {name: tensor.detach().cpu().numpy() for name, tensor in self.model_.state_dict().items()},
            )
        return state

    def __setstate__(self, state):
        if "model_" in state:
            trained_on, weights = state["model_"]
            with own_rng():  # building draws initial weights, overwritten at once; the caller's RNG stays as it was
                model = build_model(state["spec_"])
            model.load_state_dict({name: torch.from_numpy(np.array(array)) for name, array in weights.items()})
            state = {**state, "model_": model.to(device_here(trained_on)).eval()}
        super().__setstate__(state)
