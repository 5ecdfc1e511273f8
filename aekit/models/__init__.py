"""The model families, and :class:`ModelSpec`: everything needed to rebuild a model (it is a run's config)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from torch import nn

from aekit import nets
from aekit.errors import AekitError
from aekit.models.aae import PRIORS, AdversarialAE
from aekit.models.autoencoders import NOISE_KINDS, DenoisingAE, DropoutAE, corrupt
from aekit.models.base import AutoEncoder, Loss, Phase
from aekit.models.likelihood import LIKELIHOODS, Bernoulli, Gaussian, choose_likelihood
from aekit.models.pca import PCA
from aekit.models.standardize import Standardize
from aekit.models.vae import OBJECTIVES, VAE, gaussian_kl, log_importance_weights, log_mean_exp

__all__ = ["AutoEncoder", "DenoisingAE", "DropoutAE", "AdversarialAE", "VAE", "PCA", "Loss", "Phase", "ModelSpec",
           "build_model", "MODEL_NAMES", "TASKS", "gaussian_kl", "corrupt", "Bernoulli", "Gaussian", "choose_likelihood",
           "log_importance_weights", "log_mean_exp"]

MODEL_NAMES = ("ae", "dae", "dropout-ae", "aae", "vae", "pca")
NET_NAMES = ("mlp", "conv")
TASKS = ("reconstruct", "upscale")


@dataclass(frozen=True)
class ModelSpec:
    """A model's architecture and options. ``code_dim`` is at most the number of values in one example (the
    product of ``shape``), as PCA keeps at most one component per feature. ``hidden`` holds layer widths for the
    MLP (default 256, 128) or channels for the conv net (default 32, 64). ``objective`` and ``iw_samples`` pick the
    VAE's loss (the ELBO, or the importance-weighted bound over ``iw_samples`` samples); ``binarize`` trains on a
    fresh Bernoulli draw of the [0, 1] intensities every step (dynamic binarization) and evaluates on one seeded
    draw of the data. ``task`` upscale (super-resolution) makes the encoder see each image averaged over ``factor``
    x ``factor`` pixel blocks, so the model learns to restore the full-size image from its downsampled version.
    ``standardize`` (real-valued data) makes the model work on each feature's standardized values
    (:mod:`aekit.models.standardize`; the trainer fits the statistics on the training split, and they are saved with
    the weights)."""

    model: str
    shape: tuple[int, ...]
    code_dim: int = 10
    likelihood: str = "bernoulli"
    net: str = "mlp"
    hidden: tuple[int, ...] | None = None
    noise: str = "gaussian"
    noise_level: float = 0.3
    dropout: float = 0.2
    input_dropout: float = 0.1
    prior: str = "gaussian"
    discriminator_hidden: tuple[int, ...] = (256, 256)
    beta: float = 1.0
    objective: str = "elbo"
    iw_samples: int = 50
    binarize: bool = False
    task: str = "reconstruct"
    factor: int = 2
    standardize: bool = False

    def __post_init__(self):
        if self.hidden is None:
            object.__setattr__(self, "hidden", (256, 128) if self.net == "mlp" else (32, 64))
        problems = []
        if self.model not in MODEL_NAMES:
            problems.append(f"unknown model {self.model!r}; use one of {', '.join(MODEL_NAMES)}")
        if self.net not in NET_NAMES:
            problems.append(f"unknown network {self.net!r}; use mlp or conv")
        if self.likelihood not in LIKELIHOODS:
            problems.append(f"unknown likelihood {self.likelihood!r}; use one of {', '.join(LIKELIHOODS)}")
        if self.code_dim < 1:
            problems.append(f"code size {self.code_dim} must be at least 1")
        elif self.code_dim > (values := math.prod(self.shape)):  # as PCA keeps at most one component per feature
            what = (f"PCA cannot keep {self.code_dim} components of {values} features" if self.model == "pca" else
                    f"a code of {self.code_dim} values is larger than the {values} values of one example")
            problems.append(f"{what}; use a --code-dim of at most {values}")
        if any(h < 1 for h in self.hidden + self.discriminator_hidden):
            problems.append(f"hidden sizes {list(self.hidden)} must all be at least 1")
        if not (0 <= self.dropout < 1 and 0 <= self.input_dropout < 1):
            problems.append("dropout rates must be in [0, 1)")
        if self.noise not in NOISE_KINDS:
            problems.append(f"unknown noise {self.noise!r}; use one of {', '.join(NOISE_KINDS)}")
        if not self.noise_level >= 0 or (self.noise != "gaussian" and self.noise_level > 1):
            problems.append(f"noise level {self.noise_level} must be >= 0 (and <= 1 for {self.noise})")
        if self.prior not in PRIORS:
            problems.append(f"unknown prior {self.prior!r}; use one of {', '.join(PRIORS)}")
        if not self.beta >= 0:  # also refuses NaN
            problems.append(f"beta {self.beta} must be >= 0")
        if self.objective not in OBJECTIVES:
            problems.append(f"unknown objective {self.objective!r}; use one of {', '.join(OBJECTIVES)}")
        elif self.objective == "iwae" and self.model != "vae":
            problems.append(f"the iwae objective is a VAE's; use --model vae or drop --objective for {self.model}")
        elif self.objective == "iwae" and self.beta != 1:
            problems.append(f"beta {self.beta} weighs the KL term of the elbo objective and the iwae bound has "
                            "none; leave beta at 1 or use --objective elbo")
        if self.iw_samples < 1:
            problems.append(f"iw_samples {self.iw_samples} must be at least 1")
        if self.binarize and self.model == "pca":
            problems.append("binarize draws fresh binary data at every training step and PCA has no training "
                            "steps; drop --binarize for pca")
        if self.standardize and self.likelihood != "gaussian":
            problems.append("standardize rescales real values modelled by the squared error, and the cross-entropy "
                            "models [0, 1] intensities; use --loss mse or --no-standardize")
        if self.binarize and self.likelihood != "bernoulli":
            problems.append("binarize needs [0, 1] intensities modelled by the cross-entropy; use --loss bce or "
                            "drop --binarize")
        problems += _task_problems(self)
        if problems:
            raise AekitError("; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise AekitError(f"unknown model settings {sorted(unknown)}")
        tuples = {"shape", "hidden", "discriminator_hidden"}
        return cls(**{k: tuple(v) if k in tuples and v is not None else v for k, v in data.items()})


def _task_problems(spec: ModelSpec) -> list[str]:
    if spec.task not in TASKS:
        return [f"unknown task {spec.task!r}; use one of {', '.join(TASKS)}"]
    if spec.task == "reconstruct":
        return []
    if spec.factor < 2:
        return [f"upscale factor {spec.factor} must be at least 2, e.g. 2 or 4"]
    if spec.model == "pca":
        return ["upscale trains a network to restore images and PCA has none; use --model ae (or dae, vae, ...)"]
    if len(spec.shape) != 3:
        return [f"upscale needs images (channels, height, width), not examples of shape {tuple(spec.shape)}; "
                "train on an image dataset"]
    _, height, width = spec.shape
    if height % spec.factor or width % spec.factor or min(height, width) < 2 * spec.factor:
        return [f"upscale by {spec.factor} needs images whose height and width are multiples of {spec.factor} "
                f"(and at least {2 * spec.factor}), not {height}x{width}; use another --factor or resize the images"]
    return []


def build_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised model of ``spec`` (seed torch first for reproducible weights)."""
    if spec.model == "pca":
        return _shaped(PCA(spec.shape, spec.code_dim), spec)  # ModelSpec refused more components than features
    likelihood = LIKELIHOODS[spec.likelihood]
    dropout = (spec.dropout, spec.input_dropout) if spec.model == "dropout-ae" else (0.0, 0.0)
    encoder_out = 2 * spec.code_dim if spec.model == "vae" else spec.code_dim
    upscale = spec.task == "upscale"
    seen = (spec.shape[0], spec.shape[1] // spec.factor, spec.shape[2] // spec.factor) if upscale else spec.shape
    if spec.net == "mlp":
        encoder = nets.mlp_encoder(seen, spec.hidden, encoder_out, *dropout)
        decoder = nets.mlp_decoder(spec.code_dim, spec.hidden, spec.shape, dropout[0])
    else:
        encoder = nets.conv_encoder(seen, spec.hidden, encoder_out, *dropout)
        decoder = nets.conv_decoder(spec.code_dim, spec.hidden, spec.shape, dropout[0])
    if upscale:
        encoder = nn.Sequential(nn.AvgPool2d(spec.factor), encoder)
    if spec.model == "ae":
        model = AutoEncoder(encoder, decoder, likelihood)
    elif spec.model == "dae":
        model = DenoisingAE(encoder, decoder, likelihood, spec.noise, spec.noise_level)
    elif spec.model == "dropout-ae":
        model = DropoutAE(encoder, decoder, likelihood)
    elif spec.model == "vae":
        model = VAE(encoder, decoder, likelihood, spec.code_dim, spec.beta, spec.objective, spec.iw_samples)
    else:
        discriminator = nets.mlp(spec.code_dim, spec.discriminator_hidden, 1)
        model = AdversarialAE(encoder, decoder, likelihood, discriminator, spec.code_dim, spec.prior)
    model.binarize = spec.binarize
    model.upscale_factor = spec.factor if upscale else None
    model.code_dim = spec.code_dim
    return _shaped(model, spec)


def _shaped(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """The model told its example shape (what encode and reconstruct check) and, with ``spec.standardize``, given
    the per-feature standardization that the trainer fits on the training split."""
    model.example_shape = tuple(spec.shape)
    if spec.standardize:
        model.standardize = Standardize(tuple(spec.shape))
    return model
