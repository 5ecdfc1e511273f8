"""scikit-learn estimators for the auto-encoder family: a drop-in beside ``sklearn.decomposition.PCA``.

``VariationalAutoEncoder(n_components=2).fit_transform(X)`` builds the model ``aekit train --model vae`` builds and
trains it with the same trainer on the rows of X. Every estimator has ``fit``, ``transform`` (the code; the posterior
mean for the VAE), ``inverse_transform`` (the decoder's mean, in the units of X), ``fit_transform``, ``score``
(an average log-likelihood in nats, like PCA's; a lower bound on it for the VAE), ``get_feature_names_out`` and
``set_output``.

The loss: ``loss='auto'`` takes the cross-entropy (Bernoulli likelihood, sigmoid output) when every training value
lies in [0, 1] and the sum of squared differences (Gaussian likelihood, linear output) otherwise; ``loss_`` records
the choice. Under the squared error the data is standardized inside (``standardize=True``) so that every feature
counts alike; ``inverse_transform`` undoes it.

Each has an outlier detector beside it (``AutoEncoderOutlierDetector``, ...; :func:`outlier_detector`): the same
estimator with scikit-learn's ``OutlierMixin`` API, ``score_samples`` being minus each row's anomaly score
(:mod:`aekit.evaluation.anomaly`) and ``predict`` -1 for the rows below ``offset_`` (see :class:`_OutlierDetection`).
"""

from __future__ import annotations

import copy
import numbers

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, OutlierMixin, TransformerMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from aekit.data import Dataset
from aekit.errors import AekitError
from aekit.evaluation.anomaly import RECONSTRUCTION, SAMPLES, SCORES, anomaly_scores, reconstruction_nll
from aekit.models import ModelConfig, NetConfig, choose_likelihood, gaussian_kl, model_config
from aekit.models.base import device_of
from aekit.models.config import FAMILIES, family, register
from aekit.models.inference import batches, evaluating
from aekit.models.likelihood import LOSS_TO_LIKELIHOOD
from aekit.naming import speaking
from aekit.sklearn.base import (
    ParameterError,
    TorchEstimator,
    family_parameters,
    fitted,
    in_own_words,
    init_storing,
    parameter_doc,
    training_parameters,
    whole,
)
from aekit.training.settings import ROWS, train_settings
from aekit.training.trainer import check_model_fits, resolve_device

# The model's hyper-parameters that every estimator takes, with the estimators' defaults; each family adds its own
# options (those of its config beyond the networks' shared ones: see :func:`aekit.sklearn.base.family_parameters`).
MODEL = {"n_components": 2, "hidden_layer_sizes": (256, 128)}
LIKELIHOOD_TO_LOSS = {likelihood: loss for loss, likelihood in LOSS_TO_LIKELIHOOD.items()}


def _shared() -> dict:
    """The hyper-parameters every estimator of rows takes, with their defaults: the model's, the run options they
    take and the device."""
    return {**MODEL, **training_parameters(ROWS)}


def _float64(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of the fitted model to compute with (the model itself on MPS, which has no float64). float32
    BLAS kernels round a batch of one row and a batch of many differently, by more than scikit-learn's tolerance of
    1e-7; in float64 a row's code no longer depends on which rows share its batch."""
    return model if device_of(model).type == "mps" else copy.deepcopy(model).double()


# Rows a block where transform goes through X: bounded memory whatever its size.
_ROWS = 8192


def _tensor(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    """A copy of x on the model's device, in its precision."""
    return torch.tensor(x, dtype=next(model.parameters()).dtype, device=device_of(model))


@torch.no_grad()
def _mean_log_likelihood(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024, seed: int = 0) -> float:
    """The mean over the rows of x of log p(x) in nats, in the model's units, with the likelihood's proper
    log-density (``log_prob``, normalising constant included): log p(x | decoder(encoder(x))) for the deterministic
    auto-encoders; for the VAE the ELBO, E_q[log p(x|z)] - KL(q(z|x) || N(0, I)), a lower bound on log p(x), with
    one z per row drawn from a generator seeded with ``seed`` (the draw ``trainer.mean_loss`` makes)."""
    if not model.variational:
        return -float(reconstruction_nll(model, x, batch_size).mean())
    generator = torch.Generator(device_of(model)).manual_seed(seed)
    total = 0.0
    with evaluating(model):
        for batch in batches(x, batch_size, model):
            batch = model.training_input(batch)  # x as the model's loss sees it
            mu, logvar = model.posterior(batch)
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            log_p = model.likelihood.log_prob(model.decoder(mu + eps * (0.5 * logvar).exp()), batch)
            total += (log_p - gaussian_kl(mu, logvar)).sum().item()
    return total / len(x)


class _BaseAutoEncoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, TorchEstimator):
    """What the five estimators share; each subclass names its model family and its own hyper-parameters.

    Parameters (shared)
    -------------------
    n_components : int, default=2
        Size of the code, at most the number of features (fit refuses more, as PCA does).
    hidden_layer_sizes : tuple of int, default=(256, 128)
        Widths of the encoder's hidden layers; the decoder mirrors them.
    loss : {'auto', 'bce', 'mse'}, default='auto'
        'bce': cross-entropy, for values in [0, 1]; 'mse': sum of squared differences; 'auto': 'bce' when every
        training value lies in [0, 1], else 'mse'.
    standardize : bool, default=True
        Under 'mse', train on the standardized features (inverse_transform undoes it).
    max_iter : int, default=100
        Training epochs.
    batch_size : int, default=128
    learning_rate : float, default=1e-3
        Adam's step size.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the data order and the noise; an int makes ``fit`` reproducible on a device.
    device : str, default='auto'
        'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:N' or 'mps'.

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained model (an ``aekit.models`` family, float32, in eval mode); transform and score run a float64
        copy of it.
    spec_ : aekit.models.ModelConfig
        Its config (the family's, as ``aekit train`` records it).
    loss_ : {'bce', 'mse'}
        The loss trained with.
    scaler_ : StandardScaler or None
        The standardization applied before the encoder (None under 'bce' or standardize=False).
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Mean training loss per epoch.
    n_features_in_, feature_names_in_ : as in scikit-learn.
    """

    _model = ""  # the model family (its name in the registry, aekit.models.FAMILIES)
    _data = ROWS

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        config = family(cls._model)
        cls.__init__ = init_storing(
            f"{cls.__name__}.__init__",
            {**_shared(), **family_parameters(config, NetConfig), **cls._own_parameters(config)},
        )
        own = parameter_doc(config, NetConfig)
        cls.__doc__ = (cls.__doc__ or "").rstrip() + (
            "\n\n    Parameters (its own; the others: those of :class:`_BaseAutoEncoder`)\n"
            "    -------------------------------------------------------------------\n" + own + "\n"
            if own
            else "\n\n    Parameters: those of :class:`_BaseAutoEncoder`.\n"
        )

    @in_own_words
    def fit(self, X, y=None):
        """Train on the rows of X (y is ignored) and return self."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        x_min, x_max = float(X.min()), float(X.max())
        likelihood = choose_likelihood(self.loss, 0 <= x_min and x_max <= 1, x_min, x_max)
        spec = self._spec(X.shape[1], likelihood)
        try:
            device = resolve_device(self.device)
            check_model_fits(spec, device)
            settings = train_settings(self._run_options())
        except AekitError as error:
            raise ParameterError(str(error)) from None
        self.loss_ = LIKELIHOOD_TO_LOSS[likelihood]
        self.scaler_ = StandardScaler().fit(X) if likelihood == "gaussian" and self.standardize else None
        x = self._model_input(X).astype(np.float32)
        data = Dataset("the training data", x, x, None, None, binary=likelihood == "bernoulli")
        model, history = fitted(spec, data, settings, device)
        self.model_, self.spec_ = model, spec
        self.n_iter_, self.loss_curve_ = len(history), [record["train_loss"] for record in history]
        return self

    def transform(self, X):
        """The code of each row of X."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self._run("encode", X, standardized=True).astype(X.dtype, copy=False)

    def inverse_transform(self, X):
        """The decoder's mean for each code (row of X), in the units of the training data."""
        check_is_fitted(self)
        codes = check_array(X, dtype=[np.float64, np.float32])
        if codes.shape[1] != self.spec_.code_dim:
            raise ValueError(
                f"X has {codes.shape[1]} columns, but {type(self).__name__}.inverse_transform expects "
                f"codes of {self.spec_.code_dim} (n_components)"
            )
        out = self._run("decode", codes)
        if self.scaler_ is not None:
            out = self.scaler_.inverse_transform(out)
        return out.astype(codes.dtype)

    def score(self, X, y=None):
        """The average log-likelihood of the rows of X in nats, in the units of X, as ``PCA.score`` gives it (higher
        is better).

        Each row's log p(x) under the model's likelihood with its normalising constant: under 'bce' minus the
        cross-entropy (a log-probability for binary X, not a normalised density for values between 0 and 1); under
        'mse' the log-density of a Gaussian of mean the reconstruction and variance 1/2 per standardized feature,
        minus sum(log(scaler_.scale_)) where ``scaler_`` is set (the change of variables back to the units of X).
        The deterministic auto-encoders score log p(x | decoder(encoder(x))), the likelihood of x given its own code
        (they have no prior over codes). The VAE scores the ELBO, E_q[log p(x|z)] - KL(q(z|x) || N(0, I)), whatever
        its beta, with one seeded sample of z per row: a lower bound on the average log-likelihood, not the
        log-likelihood itself.
        """
        X = self._scored(X)
        model = _float64(self.model_)
        return _mean_log_likelihood(model, _tensor(model, self._model_input(X))) - self._log_scale()

    def _scored(self, X) -> np.ndarray:
        """X checked for scoring by the fitted model (the cross-entropy refuses values outside [0, 1])."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        with speaking(self._words()):
            choose_likelihood(self.loss_, False, float(X.min()), float(X.max()))
        return X

    def _log_scale(self) -> float:
        """sum(log(scaler_.scale_)): the density of X is the density of the standardized X / prod(scale_)."""
        return 0.0 if self.scaler_ is None else float(np.log(self.scaler_.scale_).sum())

    @classmethod
    def _own_parameters(cls, config: type[ModelConfig]) -> dict:
        """Hyper-parameters of a kind of estimator beyond the shared and the family's ones (none here)."""
        return {}

    @property
    def _n_features_out(self) -> int:
        return self.spec_.code_dim

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def __reduce__(self):
        # Pickled by the family's config class rather than by this class: estimator(name) makes a class of no name
        # in this module for any family but the five above, and unpickling the config class imports its family.
        detector = isinstance(self, _OutlierDetection)
        return _unpickled, (family(self._model), detector), self.__getstate__()

    def _spec(self, n_features: int, likelihood: str) -> ModelConfig:
        whole(self.n_components, "n_components")
        config = family(self._model)
        fields = self._model_fields(config, {*training_parameters(ROWS), *self._own_parameters(config)})
        try:
            return model_config(self._model, (n_features,), likelihood=likelihood, **fields)
        except AekitError as error:
            raise ParameterError(str(error)) from None

    def _model_input(self, X: np.ndarray) -> np.ndarray:
        """X as the model sees it: standardized where ``scaler_`` is set."""
        return self.scaler_.transform(X) if self.scaler_ is not None else X

    @torch.no_grad()
    def _run(self, method: str, x: np.ndarray, standardized: bool = False) -> np.ndarray:
        """The model's ``method`` (encode or decode) on the rows of x, computed in float64 a block of rows at a time
        (each block standardized first, with ``standardized``), so that no whole copy of x is made."""
        model = _float64(self.model_)
        prepare = self._model_input if standardized else None
        return np.concatenate(
            [getattr(model, method)(batch).cpu().numpy() for batch in batches(x, _ROWS, model, prepare)]
        )


class AutoEncoder(_BaseAutoEncoder):
    """Auto-encoder: minimises -log p(x | decoder(encoder(x)))."""

    _model = "ae"


class DenoisingAutoEncoder(_BaseAutoEncoder):
    """Denoising auto-encoder: minimises -log p(x | decoder(encoder(corrupt(x)))); transform encodes clean rows."""

    _model = "dae"


class DropoutAutoEncoder(_BaseAutoEncoder):
    """Dropout auto-encoder: minimises -log p(x | decoder(encoder(x))) with dropout while training."""

    _model = "dropout-ae"


class AdversarialAutoEncoder(_BaseAutoEncoder):
    """Adversarial auto-encoder (Makhzani et al. 2015): reconstruction, then a discriminator that pushes the codes
    toward the prior."""

    _model = "aae"


class VariationalAutoEncoder(_BaseAutoEncoder):
    """Variational auto-encoder: minimises E_q[-log p(x|z)] + beta KL(q(z|x) || N(0, I)); transform gives the
    posterior mean and score the ELBO, a lower bound on the average log-likelihood."""

    _model = "vae"


# Each family's estimator class and the config class it was made for (a family registered again gets a new one).
_ESTIMATORS: dict[str, tuple[type[ModelConfig], type[_BaseAutoEncoder]]] = {
    cls._model: (family(cls._model), cls)
    for cls in (AutoEncoder, DenoisingAutoEncoder, DropoutAutoEncoder, AdversarialAutoEncoder, VariationalAutoEncoder)
}


def estimator(name: str) -> type[_BaseAutoEncoder]:
    """The scikit-learn estimator class of the model family ``name`` (any registered family with networks; one is
    made, once, for a family registered after this module was written), its parameters from the family's config."""
    config = family(name)
    if _ESTIMATORS.get(name, (None,))[0] is not config:
        if config.model_class.takes_any_size and not issubclass(config, NetConfig):
            if config.model_class.gives_codes:
                raise ParameterError(
                    f"{name} codes photos of any size rather than rows; train it with `aekit train` and compress with "
                    "aekit.uses.compress.compress_images"
                )
            raise ParameterError(f"{name} restores images of any size rather than coding rows; use PhotoRestorer")
        if not issubclass(config, NetConfig):
            raise ParameterError(f"{name} has no networks to train; use scikit-learn's own estimator for it")
        doc = (config.model_class.__doc__ or config.__doc__ or name).strip().splitlines()[0]
        made = type(
            config.__name__.removesuffix("Config") + "Estimator",
            (_BaseAutoEncoder,),
            {"_model": name, "__doc__": doc, "__module__": __name__},
        )
        _ESTIMATORS[name] = (config, made)
    return _ESTIMATORS[name][1]


def __getattr__(name: str) -> type:
    # The classes estimator() and outlier_detector() make, by their names: where pickle looks for a class it saved.
    if not name.startswith("_"):
        for config in list(FAMILIES.values()):
            if issubclass(config, NetConfig):
                for made in (estimator(config.family), outlier_detector(config.family)):
                    if made.__name__ == name:
                        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _unpickled(config: type[ModelConfig], detector: bool) -> _BaseAutoEncoder:
    """A blank estimator of ``config``'s family (its outlier detector with ``detector``) for pickle to fill: the
    family is registered where it is not yet (a family a joblib worker got by value, e.g. one made in a function)."""
    if config.family not in FAMILIES:
        register(config)
    cls = (outlier_detector if detector else estimator)(config.family)
    return cls.__new__(cls)


class _OutlierDetection(OutlierMixin):
    """An outlier detector made of an auto-encoder, as scikit-learn's ``IsolationForest`` is one: ``fit`` trains the
    model on (mostly) normal rows and sets ``offset_``; ``score_samples`` gives each row's log-likelihood under the
    model in nats in the units of X, i.e. minus its anomaly score (:mod:`aekit.evaluation.anomaly`), so higher is
    more normal; ``decision_function`` = score_samples - offset_, negative for outliers; ``predict`` is +1 for an
    inlier and -1 for an outlier (decision_function < 0). transform, inverse_transform and score are those of the
    auto-encoder.

    Parameters (detection)
    ----------------------
    anomaly_score : {'reconstruction_nll', 'neg_elbo', 'nll_is'}, default='reconstruction_nll'
        'reconstruction_nll': -log p(x | decoder(encoder(x))), under 'mse' a Gaussian of variance 1/2 per
        standardized feature around the reconstruction, normalising constant and sum(log(scaler_.scale_)) included
        (every family). The VAE also has 'neg_elbo', the negative ELBO, and 'nll_is', the importance-weighted
        estimate of -log p(x), both from ``nll_samples`` posterior draws per row (the same draws for every row, so a
        row's score does not depend on the rows scored with it).
    contamination : 'auto' or float in (0, 0.5], default='auto'
        A fraction: the share of the training rows to take for outliers, offset_ being that quantile of their
        score_samples (as IsolationForest sets it). 'auto': Tukey's fence, the box plot's rule for outliers:
        offset_ = Q1 - 1.5 (Q3 - Q1), Q1 and Q3 the quartiles of the training rows' score_samples; it flags about
        0.7% of normally distributed scores, and more where the training rows have a long tail of rows the model
        explains badly (contaminated training data).
    nll_samples : int, default=100
        VAE only: posterior draws per row for 'neg_elbo' and 'nll_is'.

    Attributes (beyond the auto-encoder's)
    --------------------------------------
    offset_ : float
        The threshold on score_samples below which a row is an outlier.
    """

    @classmethod
    def _own_parameters(cls, config: type[ModelConfig]) -> dict:
        own = {"anomaly_score": RECONSTRUCTION, "contamination": "auto"}
        return {**own, "nll_samples": SAMPLES} if config.model_class.variational else own

    @in_own_words
    def fit(self, X, y=None):
        """Train on the rows of X (y is ignored), set offset_ from their scores and return self."""
        self._check_detection()
        super().fit(X)
        scores = self.score_samples(X)
        if self.contamination == "auto":
            low, high = np.percentile(scores, [25, 75])
            self.offset_ = float(low - 1.5 * (high - low))
        else:
            self.offset_ = float(np.percentile(scores, 100 * self.contamination))
        return self

    def _check_detection(self) -> None:
        scores = SCORES if hasattr(self, "nll_samples") else (RECONSTRUCTION,)
        if self.anomaly_score not in scores:
            raise ParameterError(
                f"unknown anomaly_score {self.anomaly_score!r} for {type(self).__name__}; use one of "
                f"{', '.join(scores)}"
            )
        fraction = isinstance(self.contamination, numbers.Real) and not isinstance(self.contamination, bool)
        if not (self.contamination == "auto" if isinstance(self.contamination, str) else fraction) or (
            fraction and not 0 < self.contamination <= 0.5
        ):
            raise ParameterError(f"contamination {self.contamination!r} must be 'auto' or a fraction in (0, 0.5]")
        if hasattr(self, "nll_samples"):
            whole(self.nll_samples, "nll_samples")

    def score_samples(self, X):
        """log p(x) of each row in nats, in the units of X (minus its anomaly score): higher is more normal."""
        X = self._scored(X)
        scores = anomaly_scores(
            _float64(self.model_),
            X,
            self.anomaly_score,
            samples=getattr(self, "nll_samples", SAMPLES),
            prepare=self._model_input,
        )
        return -scores - self._log_scale()

    def decision_function(self, X):
        """score_samples - offset_: negative for outliers, positive for inliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for an inlier, -1 for an outlier (decision_function < 0)."""
        return np.where(self.decision_function(X) < 0, -1, 1)


_DETECTORS: dict[str, type] = {}


def outlier_detector(name: str) -> type:
    """The scikit-learn outlier detector of the model family ``name`` (any family :func:`estimator` has): its
    estimator with :class:`_OutlierDetection`'s methods and parameters, made once."""
    if name not in _DETECTORS:
        base = estimator(name)
        title = base.__name__.removesuffix("Estimator") + "OutlierDetector"
        doc = (
            f"Outlier detector on the model of :class:`{base.__name__}`: score_samples is minus each row's anomaly "
            "score, -log p(x) in nats (higher is more normal).\n\n    Parameters for the detection: those of "
            ":class:`_OutlierDetection`."
        )
        _DETECTORS[name] = type(title, (_OutlierDetection, base), {"__doc__": doc, "__module__": __name__})
    return _DETECTORS[name]


AutoEncoderOutlierDetector = outlier_detector("ae")
DenoisingAutoEncoderOutlierDetector = outlier_detector("dae")
DropoutAutoEncoderOutlierDetector = outlier_detector("dropout-ae")
AdversarialAutoEncoderOutlierDetector = outlier_detector("aae")
VariationalAutoEncoderOutlierDetector = outlier_detector("vae")
