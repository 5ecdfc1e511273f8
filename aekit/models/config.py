"""Model configs and the registry of model families.

Each family declares one small frozen dataclass of its own fields on a shared base and registers it under its name
(:func:`register`). A config is validated once, when it is made (``problems``), builds its model (``build``), and
is what a run's config.json holds (``to_dict``) and :func:`config_from_dict` reads back. The fields made with
:func:`option` are the user's options: the command line's flags and the scikit-learn estimators' parameters are
generated from them (name, type, default, help text), so a new field appears everywhere at once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import typing
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from aekit.errors import AekitError
from aekit.models import nets
from aekit.models.likelihood import LIKELIHOODS
from aekit.models.standardize import Standardize
from aekit.naming import option as named

NET_NAMES = ("mlp", "conv", "fully-conv")
TASKS = ("reconstruct", "upscale")


def option(default, help: str, *, choices: tuple = (), sklearn: str | None = None):
    """A config field that users set: ``help`` is its help text (the command line prefixes the families that have
    it), ``choices`` its allowed values and ``sklearn`` the estimators' name for it where theirs differs."""
    return field(default=default, metadata={"help": help, "choices": tuple(choices), "sklearn": sklearn})


@dataclass(frozen=True)
class ModelConfig:
    """What every family has: the shape of one example, the code size, the likelihood of the data (``bernoulli``:
    cross-entropy, ``gaussian``: sum of squared differences) and whether the model standardizes each feature
    (:mod:`aekit.models.standardize`; real-valued data). ``code_dim`` is at most the number of values in one
    example, as PCA keeps at most one component per feature."""

    family: ClassVar[str] = ""  # the registry name, e.g. "vae"
    label: ClassVar[str] = ""  # how tables and figures name it, e.g. "VAE"
    model_class: ClassVar[type[nn.Module]]  # what ``build`` returns
    sized_by: ClassVar[tuple[str, ...]] = ("code_dim",)  # the options that set the model's size, for its messages

    shape: tuple[int, ...]
    likelihood: str = "bernoulli"
    standardize: bool = False
    code_dim: int = option(10, "size of the code", sklearn="n_components")

    def __post_init__(self):
        # Each field in its plain type (numpy's integers as int, a list read back from JSON as a tuple) before the
        # checks of its value, which may then take the types for granted.
        wrong = []
        for name, kind in self.types().items():
            value = getattr(self, name)
            plain = _plain(value, kind)
            if plain is _WRONG:
                wrong.append(
                    f"{named(name) or name} is {value!r:.40} ({_kind_of(value)}); it must be {_EXPECTED[kind]}"
                )
            else:
                object.__setattr__(self, name, plain)
        problems = wrong or self.problems()
        if problems:
            raise AekitError("; ".join(problems))

    @property
    def code_shape(self) -> tuple[int, ...]:
        """The shape of one example's code."""
        return (self.code_dim,)

    def problems(self) -> list[str]:
        """What is wrong with the fields, each in words that name the fix; a family adds its own to these."""
        problems = []
        if self.likelihood not in LIKELIHOODS:
            problems.append(f"unknown likelihood {self.likelihood!r}; use one of {', '.join(LIKELIHOODS)}")
        elif self.standardize and self.likelihood != "gaussian":
            problems.append(
                "standardize rescales real values modelled by the squared error, and the cross-entropy "
                f"models [0, 1] intensities; use {named('loss', 'mse')} or {named('standardize', False)}"
            )
        if self.code_dim < 1:
            problems.append(f"{named('code_dim', self.code_dim)} must be at least 1")
        elif self.code_dim > (values := math.prod(self.shape)):
            problems.append(
                f"a code of {self.code_dim} values is larger than the {values} values of one example; "
                f"set {named('code_dim')} to at most {values}"
            )
        return problems

    def build(self) -> nn.Module:
        """A freshly initialised model of this config (seed torch first for reproducible weights)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """The config as config.json holds it: the family's name and its own fields, tuples as lists."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"model": self.family, **{k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}}

    @classmethod
    def options(cls) -> list[dataclasses.Field]:
        """The fields users set (made with :func:`option`), in declaration order."""
        return [f for f in dataclasses.fields(cls) if "help" in f.metadata]

    @classmethod
    def types(cls) -> dict[str, type]:
        """Each field's type: int, float, str, bool or tuple (of ints)."""
        return dict(_field_types(cls))


@functools.cache
def _field_types(cls: type[ModelConfig]) -> tuple[tuple[str, type], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, _plain_type(hints[f.name])) for f in dataclasses.fields(cls))


def _plain_type(hint) -> type:
    for candidate in (hint, *typing.get_args(hint)):
        origin = typing.get_origin(candidate) or candidate
        if origin in (bool, int, float, str, tuple):
            return origin
    raise TypeError(f"config fields are bool, int, float, str or tuple[int, ...], not {hint}")


_WRONG = object()
_EXPECTED = {
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    str: "a string",
    tuple: "a list of whole numbers",
}


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _plain(value, kind: type):
    """``value`` as a plain ``kind`` (any whole number as int, any real number as float, a list or tuple of whole
    numbers as a tuple of ints), or _WRONG where it is not of that kind."""
    if kind is int:
        return int(value) if _whole(value) else _WRONG
    if kind is float:
        return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else _WRONG
    if kind is tuple:
        fits = isinstance(value, (list, tuple)) and all(map(_whole, value))
        return tuple(int(v) for v in value) if fits else _WRONG
    return value if isinstance(value, kind) else _WRONG


def _kind_of(value) -> str:
    """What ``value`` is, in words."""
    if value is None:
        return "no value"
    if isinstance(value, bool):
        return "true or false"
    if _whole(value):
        return "a whole number"
    if isinstance(value, numbers.Real):
        return "a decimal number" if math.isfinite(value) else "not a finite number"
    return {str: "a string", list: "a list", tuple: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class NetConfig(ModelConfig):
    """The shared fields of the families built of an encoder and a decoder network. ``hidden`` holds layer widths
    for the MLP (default 256, 128) or channels for the conv net (default 32, 64). ``task`` upscale (super-resolution)
    makes the encoder see each image averaged over ``factor`` x ``factor`` pixel blocks, so the model learns to
    restore the full-size image from its downsampled version. ``binarize`` trains on a fresh Bernoulli draw of the
    [0, 1] intensities every step (dynamic binarization) and evaluates on one seeded draw of the data.
    ``code_maps`` says whether the family takes ``net`` fully-conv, whose code is a map (:attr:`code_shape`)."""

    code_maps: ClassVar[bool] = False
    sized_by = ("hidden", "code_dim")

    net: str = option(
        "mlp",
        "encoder/decoder: mlp, or conv for images, or fully-conv (rd-ae): convolutions only, the code a map of "
        "--code-dim channels at 1/2^L of the image's height and width (L = the number of --hidden channels), so "
        "that images of any size are coded whole",
        choices=NET_NAMES,
    )
    hidden: tuple[int, ...] | None = option(
        None,
        "hidden layer widths (mlp) or channels (conv), comma-separated; default 256,128 for mlp and 32,64 for conv",
        sklearn="hidden_layer_sizes",
    )
    task: str = option(
        "reconstruct",
        "reconstruct the input, or upscale: learn to restore each image from its version downsampled by --factor "
        "(super-resolution; use `aekit upscale` on new images)",
        choices=TASKS,
    )
    factor: int = option(2, "upscale: the downsampling factor the model learns to undo, e.g. 2 or 4")
    binarize: bool = option(
        False,
        "train on a fresh Bernoulli draw of the [0, 1] intensities every step (dynamic binarization) and evaluate "
        "on one seeded draw",
    )

    def __post_init__(self):
        if self.hidden is None:
            object.__setattr__(self, "hidden", (256, 128) if self.net == "mlp" else (32, 64))
        super().__post_init__()

    def problems(self) -> list[str]:
        problems = super().problems()
        if self.net not in NET_NAMES:
            problems.append(f"unknown network {self.net!r}; use one of {', '.join(NET_NAMES)}")
        if self.net == "fully-conv":
            problems += self._code_map_problems()
        if any(h < 1 for h in self.hidden):
            problems.append(f"every size of {named('hidden', self.hidden)} must be at least 1")
        if self.binarize and self.likelihood != "bernoulli":
            problems.append(
                f"{named('binarize')} needs [0, 1] intensities modelled by the cross-entropy; use "
                f"{named('loss', 'bce')} or drop {named('binarize')}"
            )
        return problems + self._task_problems()

    def _code_map_problems(self) -> list[str]:
        fully_conv = named("net", "fully-conv")
        if not self.code_maps:
            return [
                f"{fully_conv} (a code map for images of any size) is for {named('model', 'rd-ae')}, not "
                f"{self.family}; use {named('net', 'conv')}"
            ]
        if len(self.shape) != 3:
            return [f"{fully_conv} needs images (channels, height, width), not examples of shape {self.shape}"]
        if self.standardize or self.task != "reconstruct":
            return [
                f"{fully_conv} codes images of any size, which {named('standardize')} and "
                f"{named('task', 'upscale')} (fitted at one size) cannot follow; drop them or use "
                f"{named('net', 'conv')}"
            ]
        return []

    def _task_problems(self) -> list[str]:
        if self.task not in TASKS:
            return [f"unknown task {self.task!r}; use one of {', '.join(TASKS)}"]
        if self.task == "reconstruct":
            return []
        if self.factor < 2:
            return [f"{named('factor', self.factor)} must be at least 2, e.g. 2 or 4"]
        if len(self.shape) != 3:
            return [
                f"upscale needs images (channels, height, width), not examples of shape {tuple(self.shape)}; "
                "train on an image dataset"
            ]
        _, height, width = self.shape
        if height % self.factor or width % self.factor or min(height, width) < 2 * self.factor:
            return [
                f"upscale by {self.factor} needs images whose height and width are multiples of {self.factor} "
                f"(and at least {2 * self.factor}), not {height}x{width}; use another {named('factor')} or resize "
                "the images"
            ]
        return []

    @property
    def upscale_factor(self) -> int | None:
        """The factor an upscaler restores, None for a model that reconstructs its input."""
        return self.factor if self.task == "upscale" else None

    def networks(
        self, encoder_out: int | None = None, dropout: float = 0.0, input_dropout: float = 0.0
    ) -> tuple[nn.Module, nn.Module]:
        """The encoder (to ``encoder_out`` values, default the code size; block-averaging first for an upscaler)
        and the decoder (code to an example), MLP or convolutional as ``net`` says."""
        factor = self.upscale_factor
        seen = (self.shape[0], self.shape[1] // factor, self.shape[2] // factor) if factor else self.shape
        out = encoder_out or self.code_dim
        if self.net == "mlp":
            encoder = nets.mlp_encoder(seen, self.hidden, out, dropout, input_dropout)
            decoder = nets.mlp_decoder(self.code_dim, self.hidden, self.shape, dropout)
        elif self.net == "fully-conv":
            encoder = nets.fully_conv_encoder(self.shape[0], self.hidden, out)
            decoder = nets.fully_conv_decoder(self.code_dim, self.hidden, self.shape)
        else:
            encoder = nets.conv_encoder(seen, self.hidden, out, dropout, input_dropout)
            decoder = nets.conv_decoder(self.code_dim, self.hidden, self.shape, dropout)
        return (nn.Sequential(nn.AvgPool2d(factor), encoder) if factor else encoder), decoder

    @property
    def code_shape(self) -> tuple[int, ...]:
        """The shape of one example's code: (code_dim,), or with --net fully-conv the code map (code_dim, h, w) of
        an example of the training size."""
        if self.net != "fully-conv":
            return super().code_shape
        return (self.code_dim, *nets.code_map_size(*self.shape[1:], len(self.hidden)))

    def model_settings(self) -> dict:
        """What every auto-encoder's constructor takes beside its networks and likelihood."""
        return {
            "code_dim": self.code_dim,
            "code_shape": self.code_shape,
            "example_shape": tuple(self.shape),
            "binarize": self.binarize,
            "upscale_factor": self.upscale_factor,
        }


FAMILIES: dict[str, type[ModelConfig]] = {}


def register(config: type[ModelConfig]) -> type[ModelConfig]:
    """Add a family's config class to the registry under its ``family`` name (a class decorator)."""
    if not config.family or config.family in FAMILIES and FAMILIES[config.family] is not config:
        raise AekitError(f"a model family needs a name of its own, not {config.family!r}")
    FAMILIES[config.family] = config
    return config


def family(name: str) -> type[ModelConfig]:
    """The config class registered under ``name``."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise AekitError(f"unknown model {name!r}; use one of {', '.join(FAMILIES)}") from None


def model_config(name: str, shape: tuple[int, ...], **fields) -> ModelConfig:
    """The config of family ``name`` for examples of ``shape`` (validated: raises AekitError). A field the family
    does not have is refused, naming the families that do."""
    config = family(name)
    own = {f.name for f in dataclasses.fields(config)}
    foreign = sorted(set(fields) - own)
    if foreign:
        raise AekitError("; ".join(_not_an_option(name, key) for key in foreign))
    return config(shape=tuple(shape), **fields)


def _not_an_option(name: str, key: str) -> str:
    owners = [n for n, c in FAMILIES.items() if key in {f.name for f in dataclasses.fields(c)}]
    if owners:
        return (
            f"{named(key)} is an option of {', '.join(owners)}, not of {name}; drop it or use "
            f"{named('model', owners[0])}"
        )
    return f"unknown model setting {key!r}"


def config_from_dict(data: dict) -> ModelConfig:
    """A config as :meth:`ModelConfig.to_dict` wrote it. Run folders from before the registry hold every family's
    fields in one flat set: the fields of other families are dropped there (they meant nothing to the model)."""
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise AekitError("the model section names no model family")
    config = family(data["model"])
    everyone = {f.name for c in FAMILIES.values() for f in dataclasses.fields(c)}
    own = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(data) - everyone - {"model"})
    if unknown:
        raise AekitError(f"unknown model settings {unknown}")
    return config(**{k: v for k, v in data.items() if k in own})


def build_model(config: ModelConfig) -> nn.Module:
    """A freshly initialised model of ``config``, which it keeps as ``model.config``; with ``config.standardize``,
    given the per-feature standardization that the trainer fits on the training split."""
    model = config.build()
    model.config = config
    if config.standardize:
        model.standardize = Standardize(tuple(config.shape))
    return model


def on_meta(config: ModelConfig) -> nn.Module:
    """The model of ``config`` built on PyTorch's meta device: its tensors' shapes and no memory, however large."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. that a zero-sized layer has nothing to initialise
        return build_model(config)


def coding_families() -> tuple[str, ...]:
    """The families whose models give codes (``gives_codes``): those ``aekit compare`` sets side by side at a code
    size by default."""
    return tuple(name for name, config in FAMILIES.items() if config.model_class.gives_codes)


def option_defaults() -> dict:
    """Every family's options and their defaults, and the family option itself (``model``, default ae)."""
    defaults = {"model": "ae"}
    for config in FAMILIES.values():
        for f in config.options():
            defaults.setdefault(f.name, f.default)
    return defaults
