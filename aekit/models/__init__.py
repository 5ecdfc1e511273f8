"""The model families and their registry: each family's file declares its config (:mod:`aekit.models.config`) and
registers it; importing a family's module here is all it takes to add one everywhere."""

from aekit.models.base import AutoEncoder, Loss, Phase
from aekit.models.config import (
    FAMILIES,
    TASKS,
    ModelConfig,
    NetConfig,
    build_model,
    config_from_dict,
    model_config,
    option,
    register,
)
from aekit.models.likelihood import Bernoulli, Gaussian, choose_likelihood

# The families, in the order tables and the command line list them (importing a module registers its families).
from aekit.models.pca import PCA  # isort: skip
from aekit.models.autoencoders import DenoisingAE, DropoutAE, corrupt  # isort: skip
from aekit.models.aae import AdversarialAE  # isort: skip
from aekit.models.vae import VAE, gaussian_kl, log_importance_weights, log_mean_exp  # isort: skip
from aekit.models.vqvae import VQVAE as VQVAE  # isort: skip
from aekit.models.rate_distortion import RateDistortionAE as RateDistortionAE  # isort: skip
from aekit.models.factorized import GDNCodec as GDNCodec  # isort: skip
from aekit.models.hyperprior import ScaleHyperprior as ScaleHyperprior  # isort: skip
from aekit.models.restoration import Restorer as Restorer  # isort: skip

__all__ = [
    "AutoEncoder",
    "DenoisingAE",
    "DropoutAE",
    "AdversarialAE",
    "VAE",
    "PCA",
    "Loss",
    "Phase",
    "ModelConfig",
    "NetConfig",
    "FAMILIES",
    "TASKS",
    "build_model",
    "config_from_dict",
    "model_config",
    "option",
    "register",
    "gaussian_kl",
    "corrupt",
    "Bernoulli",
    "Gaussian",
    "choose_likelihood",
    "log_importance_weights",
    "log_mean_exp",
]
